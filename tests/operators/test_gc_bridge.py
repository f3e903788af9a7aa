"""Garbled comparison, ReLU and argmax on shares: exact on random and edge-case ring values."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from mpc_ops_roles import DEALER, P0, P1, dealer_role, party_role, ring_role  # type: ignore[import-not-found]

from sharelearn.testing.roles import RoleRun, run_roles

pytestmark = pytest.mark.timeout(120)

EDGES = np.array(
    [0, 1, -1, 2, -2, 2**63 - 1, -(2**63), -(2**63) + 1, 2**62, -(2**62), 2**31, -(2**31)], dtype=np.int64
)


def _ring_inputs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rand = rng.integers(-(2**63), 2**63 - 1, size=500, dtype=np.int64, endpoint=True)
    return np.concatenate([EDGES, rand]).view(np.uint64)


def _roles(op: str, x: np.ndarray, source: str = "dealer") -> dict[str, Any]:
    roles: dict[str, Any] = {
        p: partial(ring_role, index=i, op=op, x=x, source=source) for i, p in enumerate((P0, P1))
    }
    if source == "dealer":
        roles[DEALER] = dealer_role
    return roles


@pytest.mark.parametrize("op", ["lt0", "drelu", "relu"])
def test_garbled_ops_are_exact_on_random_and_edge_ring_values(op: str) -> None:
    x = _ring_inputs(3)
    signed = x.view(np.int64)

    out = run_roles(_roles(op, x), timeout=90)

    want = {
        "lt0": (signed < 0).astype(np.uint64),
        "drelu": (signed >= 0).astype(np.uint64),
        "relu": np.where(signed >= 0, signed, 0).view(np.uint64),
    }[op]
    np.testing.assert_array_equal(out[P0], want)
    np.testing.assert_array_equal(out[P1], want)


@pytest.mark.parametrize("cmp_bits", [2, 17, 41])
def test_narrow_sign_circuit_is_exact_below_its_bound(cmp_bits: int) -> None:
    rng = np.random.default_rng(cmp_bits)
    bound = 2 ** (cmp_bits - 1)
    edges = np.array([0, 1, -1, bound - 1, -bound, -bound + 1], dtype=np.int64)
    x = np.concatenate([edges, rng.integers(-bound, bound, size=300, dtype=np.int64)]).view(np.uint64)
    roles: dict[str, Any] = {
        p: partial(ring_role, index=i, op="relu", x=x, cmp_bits=cmp_bits) for i, p in enumerate((P0, P1))
    }
    roles[DEALER] = dealer_role

    out = run_roles(roles, timeout=90)

    signed = x.view(np.int64)
    np.testing.assert_array_equal(out[P0], np.where(signed >= 0, signed, 0).view(np.uint64))


@pytest.mark.parametrize("cmp_bits", [24, 64])
def test_offset_signs_are_exact_against_public_constants_within_the_bound(cmp_bits: int) -> None:
    # the clip of ss_lr's sigmoid: x_t +- 2^13 on 24 share bits, exact while |x_t +- c| < 2^23
    c = 2**13
    top = 2 ** (cmp_bits - 1) - c - 1
    rng = np.random.default_rng(cmp_bits)
    edges = np.array([0, 1, -1, c, -c, c - 1, -c + 1, c + 1, -c - 1, top, -top], dtype=np.int64)
    x = np.concatenate([edges, rng.integers(-top, top, size=300, dtype=np.int64)]).view(np.uint64)
    roles: dict[str, Any] = {
        p: partial(ring_role, index=i, op=f"offset_signs:{-c},{c}", x=x, cmp_bits=cmp_bits)
        for i, p in enumerate((P0, P1))
    }
    roles[DEALER] = dealer_role

    out = run_roles(roles, timeout=90)

    signed = x.view(np.int64)
    want = np.stack([signed - c < 0, signed + c < 0]).astype(np.uint64)
    np.testing.assert_array_equal(out[P0], want)
    np.testing.assert_array_equal(out[P1], want)


def test_comparison_of_shared_reals_matches_plain_including_ties() -> None:
    rng = np.random.default_rng(4)
    x = np.round(rng.uniform(-50, 50, 400), 1)
    y = np.round(rng.uniform(-50, 50, 400), 1)
    y[:40] = x[:40]
    roles: dict[str, Any] = {
        p: partial(party_role, index=i, op="lt", x=x, y=y, shape_x=x.shape, shape_y=y.shape)
        for i, p in enumerate((P0, P1))
    }
    roles[DEALER] = dealer_role

    out = run_roles(roles, timeout=90)

    np.testing.assert_array_equal(out[P0], (x < y).astype(np.float64))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_argmax_matches_numpy_first_index_on_ties(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.integers(-5, 5, size=(200, k)).astype(np.float64)
    roles: dict[str, Any] = {
        p: partial(party_role, index=i, op="argmax", x=x, y=None, shape_x=x.shape, shape_y=())
        for i, p in enumerate((P0, P1))
    }
    roles[DEALER] = dealer_role

    out = run_roles(roles, timeout=90)

    np.testing.assert_array_equal(out[P0], np.argmax(x, axis=1).astype(np.float64))


def test_gc_messages_to_the_garbler_are_only_ot_extension_matrices() -> None:
    x = _ring_inputs(9)

    out = run_roles(_roles("relu", x), timeout=90)

    garbler_tags = {m.tag.split("/")[0] for m in out.audit.messages if m.dst == P0 and m.src == P1}
    assert garbler_tags <= {"ss_ot", "ot", "open", "dealer", "reveal"}


@pytest.mark.timeout(180)
def test_garbled_relu_with_he_triples_over_both_transports(run_parties: Callable[..., RoleRun]) -> None:
    x = _ring_inputs(5)[:64]

    out = run_parties(_roles("relu", x, source="he"), timeout=120)

    signed = x.view(np.int64)
    np.testing.assert_array_equal(out[P0], np.where(signed >= 0, signed, 0).view(np.uint64))
