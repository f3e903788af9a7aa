from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import additive
from sharelearn.crypto.fixedpoint import FixedPoint
from sharelearn.crypto.rng import SeededRng, random_u64

u64s = st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40).map(
    lambda v: np.array(v, dtype=np.uint64)
)


@settings(max_examples=100, deadline=None)
@given(u64s, st.integers(2, 6))
def test_share_reconstruct_round_trip(x: np.ndarray, n: int) -> None:
    shares = additive.share(x, n)

    assert len(shares) == n
    assert np.array_equal(additive.reconstruct(shares), x)


@settings(max_examples=60, deadline=None)
@given(u64s, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_local_operations_are_homomorphic(x: np.ndarray, c: int, k: int) -> None:
    y = x[::-1].copy()
    xs, ys = additive.share(x), additive.share(y)
    c_u, k_u = np.uint64(c), np.uint64(k)

    s = additive.reconstruct([additive.add(a, b) for a, b in zip(xs, ys, strict=True)])
    d = additive.reconstruct([additive.sub(a, b) for a, b in zip(xs, ys, strict=True)])
    ng = additive.reconstruct([additive.neg(a) for a in xs])
    pc = additive.reconstruct([additive.add_public(i, a, c_u) for i, a in enumerate(xs)])
    sc = additive.reconstruct([additive.scale(a, k_u) for a in xs])

    assert np.array_equal(s, x + y)
    assert np.array_equal(d, x - y)
    assert np.array_equal(ng, np.uint64(0) - x)
    assert np.array_equal(pc, x + c_u)
    assert np.array_equal(sc, x * k_u)


def test_single_share_looks_uniform() -> None:
    x = np.zeros(20000, dtype=np.uint64)

    s0, _ = additive.share(x, rng=SeededRng(1))

    assert 0.45 < float(np.mean(s0 >> np.uint64(63))) < 0.55


def test_truncation_within_one_ulp() -> None:
    fp = FixedPoint(16)
    x = np.random.default_rng(0).uniform(-1000, 1000, size=20000)
    prod = fp.encode(x) * fp.encode(np.full_like(x, 1.5))  # 32 fractional bits
    s0, s1 = additive.share(prod, rng=SeededRng(7))

    t = additive.reconstruct([additive.truncate_share(0, s0, 16), additive.truncate_share(1, s1, 16)])

    exact = fp.truncate(prod).view(np.int64)
    diff = t.view(np.int64) - exact
    # |x| < 2^11 * 2^32 gives l_x = 43: failure probability <= 2^-20 per element
    assert np.all((diff == 0) | (diff == 1))
    assert additive.truncation_failure_bound(43) == 2.0**-20


def test_truncation_of_negative_and_zero_extremes() -> None:
    x = np.array([0, 1, -1, -(2**40), 2**40 - 1], dtype=np.int64).view(np.uint64)
    s0, s1 = additive.share(x, rng=SeededRng(8))

    t = additive.reconstruct([additive.truncate_share(0, s0, 8), additive.truncate_share(1, s1, 8)])

    floor = x.view(np.int64) >> 8
    assert np.all(np.isin(t.view(np.int64) - floor, [0, 1]))


def test_truncation_rejects_third_party() -> None:
    with pytest.raises(CryptoError, match="2-party"):
        additive.truncate_share(2, random_u64(3), 8)


def test_share_rejects_float_and_one_party() -> None:
    with pytest.raises(CryptoError, match="uint64"):
        additive.share(np.array([1.0]))
    with pytest.raises(CryptoError, match="n >= 2"):
        additive.share(np.array([1], dtype=np.uint64), n=1)


def test_reconstruct_rejects_shape_mismatch() -> None:
    with pytest.raises(CryptoError, match="shapes"):
        additive.reconstruct([random_u64(3), random_u64(4)])
