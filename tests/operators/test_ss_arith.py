"""The ss engine's arithmetic against the plain engine: share/reveal, add, mul, matmul, truncation."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpc_ops_roles import DEALER, P0, P1, dealer_role, party_role  # type: ignore[import-not-found]

from sharelearn.core.errors import ConfigError
from sharelearn.crypto.fixedpoint import FixedPoint
from sharelearn.operators.plain import PlainOps
from sharelearn.operators.ss_arith import _int8_operands, ring_matmul, ring_matmul_sum
from sharelearn.testing.roles import run_roles

pytestmark = pytest.mark.timeout(120)

RES = FixedPoint(16).resolution
PLAIN = PlainOps()


def _run(op: str, x: np.ndarray, y: np.ndarray | None, source: str = "dealer") -> tuple[Any, Any, Any]:
    shape_y = () if y is None else y.shape
    roles: dict[str, Any] = {
        p: partial(party_role, index=i, op=op, x=x, y=y, shape_x=x.shape, shape_y=shape_y, source=source)
        for i, p in enumerate((P0, P1))
    }
    if source == "dealer":
        roles[DEALER] = dealer_role
    out = run_roles(roles, timeout=60)
    return out[P0], out[P1], out.stats


# |x y| < 2^12 keeps SecureML truncation's failure probability below 2^-19 per element
reals = st.floats(-60.0, 60.0, allow_nan=False)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(reals, reals), min_size=1, max_size=40), st.sampled_from(["add", "sub", "mul"]))
def test_elementwise_ops_match_the_plain_engine(pairs: list[tuple[float, float]], op: str) -> None:
    x = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs])

    got0, got1, _ = _run(op, x, y)

    want = getattr(PLAIN, op)(x, y)
    # encoding error res/2 per input, propagated through the product, plus one ulp of truncation
    bound = RES * (1 + (np.abs(x) + np.abs(y) if op == "mul" else 1))
    assert np.all(np.abs(got0 - want) <= bound)
    np.testing.assert_array_equal(got0, got1)  # both parties open the same value


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_matmul_matches_the_plain_engine(m: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-10, 10, (m, k)), rng.uniform(-10, 10, (k, n))

    got, _, stats = _run("matmul", x, y)

    bound = RES * (1 + k * 20)
    np.testing.assert_allclose(got, PLAIN.matmul(x, y), atol=bound)
    assert stats[P0]["rounds"] >= 1


def test_share_then_reveal_is_exact_up_to_encoding_and_costs_counted_rounds() -> None:
    x = np.array([0.0, 1.0, -1.0, 123.456, -(2.0**30)])

    got, _, stats = _run("neg", x, None)

    np.testing.assert_allclose(got, -x, atol=RES / 2)
    assert stats[P0]["rounds"] == stats[P1]["rounds"] >= 1
    assert stats[P0]["bytes_sent"] > 0


def test_mul_and_matmul_with_he_triples_match_plain() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-5, 5, (6, 3)), rng.uniform(-5, 5, (3, 2))

    got_mm, _, _ = _run("matmul", x, y, source="he")
    got_mul, _, _ = _run("mul", x, rng.uniform(-5, 5, (6, 3)), source="he")

    np.testing.assert_allclose(got_mm, x @ y, atol=RES * 80)
    assert got_mul.shape == (6, 3)


def test_matmul_with_misaligned_shapes_names_the_shapes() -> None:
    with pytest.raises(Exception, match=r"\(4, 3\) @ \(2, 2\)") as info:
        _run("matmul", np.ones((4, 3)), np.ones((2, 2)))

    assert isinstance(info.value.__cause__, ConfigError)


def _oracle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pure-integer A @ B mod 2^64 (Python ints, no floating point anywhere)."""
    return np.array((a.astype(object) @ b.astype(object)) % (1 << 64), dtype=np.uint64)


@pytest.mark.parametrize("backend", ["int8", "f64"])
@pytest.mark.parametrize(("m", "k", "n"), [(3, 1, 2), (33, 17, 40), (8, 4096, 6), (2, 16_400, 3)])
def test_ring_matmul_is_exact_on_full_range_inputs(backend: str, m: int, k: int, n: int) -> None:
    if backend == "int8":
        pytest.importorskip("torch")
    rng = np.random.default_rng(m * k * n)
    a = rng.integers(0, 2**64, (m, k), dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 2**64, (k, n), dtype=np.uint64, endpoint=False)
    # digit and limb extremes: all ones (-1), 0x80..80, 0x7f..7f (0x7f..7f80 has all digits -128)
    a[0, : min(k, 3)] = [2**64 - 1, 0x8080808080808080, 0x7F7F7F7F7F7F7F7F][: min(k, 3)]
    b[: min(k, 3), 0] = [2**64 - 1, 0x7F7F7F7F7F7F7F7F, 0x8080808080808080][: min(k, 3)]

    np.testing.assert_array_equal(ring_matmul(a, b, backend=backend), _oracle(a, b))


@pytest.mark.parametrize(
    "value", [0x7F7F7F7F7F7F7F80, 0x8080808080808080, 0x7F7F7F7F7F7F7F7F, 2**64 - 1, 2**63]
)
def test_int8_ring_matmul_is_exact_when_every_digit_product_is_extreme(value: int) -> None:
    pytest.importorskip("torch")
    k = 8192 + 5  # a full int32 accumulation block and a remainder
    a = np.full((2, k), value, dtype=np.uint64)
    b = np.full((k, 3), value, dtype=np.uint64)

    np.testing.assert_array_equal(ring_matmul(a, b, backend="int8"), _oracle(a, b))


def test_int8_operands_hold_balanced_digits_of_every_byte_pattern() -> None:
    x = np.array(
        [0, 1, 2**64 - 1, 0x8080808080808080, 0x7F7F7F7F7F7F7F7F, 2**63, 0xFF00FF00FF00FF00], np.uint64
    )
    lhs, rhs = _int8_operands([x.reshape(1, -1)], [x.reshape(-1, 1)])
    k = x.size
    left = lhs.reshape(8, k).astype(np.int64)  # digit planes d0..d7 of the row
    right = rhs.reshape(8, k)[::-1].astype(np.int64)  # stored d7..d0: reversed back
    weights = [1 << (8 * i) for i in range(8)]
    for d in (left, right):
        back = [sum(int(d[i, j]) * weights[i] for i in range(8)) % (1 << 64) for j in range(k)]
        assert back == [int(v) for v in x]
        assert d.min() >= -128 and d.max() <= 127


@pytest.mark.parametrize("backend", ["auto", "int8", "f64"])
@pytest.mark.parametrize("ks", [(3, 5), (700, 9000)])
def test_ring_matmul_sum_equals_the_product_of_the_stacked_parts(backend: str, ks: tuple[int, ...]) -> None:
    if backend == "int8":
        pytest.importorskip("torch")
    rng = np.random.default_rng(sum(ks))
    m, n = 40, 33
    a = [rng.integers(0, 2**64, (m, k), dtype=np.uint64, endpoint=False) for k in ks]
    b = [rng.integers(0, 2**64, (k, n), dtype=np.uint64, endpoint=False) for k in ks]

    got = ring_matmul_sum(a, b, backend=backend)

    np.testing.assert_array_equal(got, _oracle(np.hstack(a), np.vstack(b)))


def test_ring_matmul_sum_names_misaligned_parts() -> None:
    z = np.zeros
    with pytest.raises(ConfigError, match=r"\(2, 3\) @ \(4, 2\)"):
        ring_matmul_sum(
            [z((2, 2), np.uint64), z((2, 3), np.uint64)], [z((2, 2), np.uint64), z((4, 2), np.uint64)]
        )
    with pytest.raises(ConfigError, match="as many"):
        ring_matmul_sum([z((2, 2), np.uint64)], [])


def test_ring_matmul_rejects_an_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="backend"):
        ring_matmul(np.zeros((2, 2), np.uint64), np.zeros((2, 2), np.uint64), backend="gpu")
