"""Role functions for the ss-engine tests: importable, so the gRPC processes can run them too."""

from __future__ import annotations

from typing import Any

import numpy as np

from sharelearn.core.link import Link
from sharelearn.operators.ss_arith import SSOps
from sharelearn.operators.triples import DealerTripleSource, HETripleSource, he_triple_setup, run_dealer

P0, P1, DEALER = "p0", "p1", "dealer"


def make_ops(link: Link, index: int, source: str, *, frac_bits: int = 16, cmp_bits: int = 64) -> SSOps:
    """The engine of party `index` with triples from the dealer or from HE (1024-bit OU)."""
    from sharelearn.crypto.fixedpoint import FixedPoint

    peer = P1 if index == 0 else P0
    triples: DealerTripleSource | HETripleSource
    if source == "dealer":
        triples = DealerTripleSource(link, dealer=DEALER, index=index)
    else:
        triples = he_triple_setup(link, peer=peer, index=index, scheme="ou", key_bits=1024)
    return SSOps(
        link, peer=peer, index=index, triples=triples, fixed=FixedPoint(frac_bits), cmp_bits=cmp_bits
    )


def dealer_role(link: Link) -> int:
    return run_dealer(link, party0=P0, party1=P1)


def compute(
    engine: SSOps,
    op: str,
    x: np.ndarray | None,
    y: np.ndarray | None,
    shape_x: tuple[int, ...],
    shape_y: tuple[int, ...],
) -> Any:
    """Share x (party 0) and y (party 1), apply `op`, reveal to both."""
    xs = engine.share(x, owner=0, shape=shape_x)
    ys = engine.share(y, owner=1, shape=shape_y) if shape_y else None
    if op in ("add", "sub", "mul", "matmul"):
        assert ys is not None
        out = getattr(engine, op)(xs, ys)
    elif op == "lt":
        assert ys is not None
        return engine.reveal_int(engine.lt(xs, ys))
    elif op == "argmax":
        return engine.reveal_int(engine.argmax(xs))
    elif op.startswith("sigmoid_"):
        out = engine.sigmoid(xs, op.removeprefix("sigmoid_"))
    else:
        out = getattr(engine, op)(xs)
    return engine.reveal(out)


def party_role(
    link: Link,
    *,
    index: int,
    op: str,
    x: np.ndarray | None,
    y: np.ndarray | None,
    shape_x: tuple[int, ...],
    shape_y: tuple[int, ...],
    source: str = "dealer",
    cmp_bits: int = 64,
) -> Any:
    engine = make_ops(link, index, source, cmp_bits=cmp_bits)
    try:
        return compute(engine, op, x if index == 0 else None, y if index == 1 else None, shape_x, shape_y)
    finally:
        engine.triples.close()  # type: ignore[attr-defined]


def ring_role(
    link: Link, *, index: int, op: str, x: np.ndarray, source: str = "dealer", cmp_bits: int = 64
) -> Any:
    """Share raw ring elements x (party 0 holds all, party 1 zeros) and apply a garbled op exactly."""
    engine = make_ops(link, index, source, cmp_bits=cmp_bits)
    try:
        xs = engine.share_ring(x if index == 0 else None, owner=0, shape=x.shape)
        if op == "relu":
            return engine.reveal_ring(engine.relu(xs))
        if op == "drelu":
            return engine.reveal_ring(engine.drelu(xs))
        if op.startswith("offset_signs:"):  # "offset_signs:c1,c2": [x + c_j < 0] on cmp_bits bits
            from sharelearn.operators import gc_bridge

            offsets = tuple(int(c) for c in op.split(":")[1].split(","))
            return engine.reveal_ring(gc_bridge.offset_signs(engine, xs, offsets))
        return engine.reveal_ring(engine.lt(xs, np.zeros_like(xs)))
    finally:
        engine.triples.close()  # type: ignore[attr-defined]


def triple_role(
    link: Link, *, index: int, source: str, specs: list[list[Any]], prefetch: bool
) -> list[list[np.ndarray]]:
    """Draw triples for `specs` ([kind, dims]) and return this party's (a, b, c) shares."""
    from sharelearn.operators.triples import spec_from_wire

    engine = make_ops(link, index, source)
    parsed = [spec_from_wire(s, peer="test", tag="spec") for s in specs]
    if prefetch:
        engine.triples.prefetch(parsed)  # type: ignore[attr-defined]
    out = []
    for s in parsed:
        t = engine.triples.triple(s.dims) if s.kind == "mul" else engine.triples.matrix_triple(*s.dims)
        out.append([t.a, t.b, t.c])
    engine.triples.close()  # type: ignore[attr-defined]
    return out
