"""Triple sources: the trusted dealer role and dealer-free HE triples give correct, fresh triples."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from mpc_ops_roles import DEALER, P0, P1, dealer_role, triple_role  # type: ignore[import-not-found]

from sharelearn.core.codec import decode
from sharelearn.core.errors import CryptoError, ProtocolError
from sharelearn.operators.triples import matmul_spec, mul_spec, spec_from_wire
from sharelearn.testing.roles import run_roles

pytestmark = pytest.mark.timeout(120)

SPECS = [mul_spec((7,)), matmul_spec(5, 4, 3), mul_spec((2, 3)), matmul_spec(1, 9, 1)]


def _run(source: str, prefetch: bool) -> Any:
    wire = [s.to_wire() for s in SPECS]
    roles: dict[str, Any] = {
        p: partial(triple_role, index=i, source=source, specs=wire, prefetch=prefetch)
        for i, p in enumerate((P0, P1))
    }
    if source == "dealer":
        roles[DEALER] = dealer_role
    return run_roles(roles, timeout=90)


@pytest.mark.parametrize(
    ("source", "prefetch"), [("dealer", False), ("dealer", True), ("he", False), ("he", True)]
)
def test_triples_reconstruct_to_products(source: str, prefetch: bool) -> None:
    out = _run(source, prefetch)

    for spec, t0, t1 in zip(SPECS, out[P0], out[P1], strict=True):
        a, b, c = (t0[i] + t1[i] for i in range(3))
        want = a * b if spec.kind == "mul" else np.matmul(a, b)
        np.testing.assert_array_equal(c, want)
        assert len(np.unique(a)) == a.size  # fresh random values, not a constant


def test_dealer_party0_never_receives_anything_but_its_seed() -> None:
    out = _run("dealer", True)

    to_p0 = [m for m in out.audit.messages if m.dst == P0 and m.src == DEALER]
    assert [m.tag for m in to_p0] == ["dealer/seed"]


def test_he_cross_terms_received_look_uniform_mod_2_64() -> None:
    out = _run("he", True)

    # the shares of c each party ends with are uniform: bit frequencies near 1/2
    cs = np.concatenate([t[2].reshape(-1) for t in out[P1]])
    bits = np.unpackbits(cs.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.06
    # and what crossed the wire is ciphertexts / keys only
    for payload in out.audit.received(P1):
        value = decode(payload)
        assert isinstance(value, dict) and value.get("scheme") == "ou"


def test_malformed_triple_request_is_a_protocol_error_naming_the_peer() -> None:
    with pytest.raises(ProtocolError, match="p1: malformed triple request"):
        spec_from_wire(["matmul", [1, 2]], peer="p1", tag="dealer/req/0")


def test_prefetched_triples_must_be_consumed_in_order() -> None:
    from sharelearn.operators.triples import _Queue

    q = _Queue()
    q.items.append((mul_spec((3,)), object()))  # type: ignore[arg-type]

    with pytest.raises(CryptoError, match="does not match"):
        q.pop(mul_spec((4,)))
