from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import shamir
from sharelearn.crypto.rng import random_u64

P = shamir.PRIME


def test_shares_are_the_polynomial_evaluated_with_python_ints() -> None:
    # Rebuild each share from the coefficients (recovered by interpolating t points as Python ints).
    secrets = np.array([0, 1, P - 1, 2**24 - 1, 987654321], dtype=np.uint64)
    t, n = 4, 9
    shares = shamir.split(secrets, n, t)
    assert shares.dtype == np.uint64 and int(shares.max()) < P
    for col, secret in enumerate(secrets.tolist()):
        pts = [(x, int(shares[x - 1, col])) for x in range(1, t + 1)]

        def at(z: int, pts: list[tuple[int, int]] = pts) -> int:
            total = 0
            for i, (xi, yi) in enumerate(pts):
                num, den = 1, 1
                for j, (xj, _) in enumerate(pts):
                    if j != i:
                        num, den = num * (z - xj) % P, den * (xi - xj) % P
                total += yi * num * pow(den, -1, P)
            return total % P

        assert at(0) == secret
        assert [at(x) for x in range(1, n + 1)] == shares[:, col].tolist()


def test_lagrange_coefficients_match_python_ints() -> None:
    xs = [3, 17, 2**31 - 2, 5, 1000]
    want = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num, den = num * xj % P, den * (xj - xi) % P
        want.append(num * pow(den, -1, P) % P)

    assert shamir.lagrange_at_zero(xs) == want


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.data())
def test_any_t_of_n_recover(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    secrets = np.array(data.draw(st.lists(st.integers(0, P - 1), min_size=1, max_size=8)), dtype=np.uint64)
    shares = shamir.split(secrets, n, t)
    subset = data.draw(st.lists(st.integers(0, n - 1), min_size=t, max_size=n, unique=True))

    out = shamir.recover([i + 1 for i in subset], shares[subset], t)

    assert np.array_equal(out, secrets)


def test_every_subset_of_threshold_recovers() -> None:
    secrets = random_u64(100) % np.uint64(P)
    shares = shamir.split(secrets, 5, 3)

    for subset in itertools.combinations(range(5), 3):
        assert np.array_equal(shamir.recover([i + 1 for i in subset], shares[list(subset)], 3), secrets)


def test_fewer_than_threshold_shares_give_wrong_secret_and_raise() -> None:
    secrets = random_u64(50) % np.uint64(P)
    shares = shamir.split(secrets, 5, 3)

    with pytest.raises(CryptoError, match="needs 3 shares"):
        shamir.recover([1, 2], shares[:2], 3)
    # interpolating t-1 shares as if the threshold were lower yields unrelated values
    assert not np.array_equal(shamir.recover([1, 2], shares[:2], 2), secrets)


def test_duplicate_x_raises() -> None:
    shares = shamir.split(np.array([5], dtype=np.uint64), 3, 2)

    with pytest.raises(CryptoError, match="duplicate"):
        shamir.recover([1, 1], shares[[0, 0]], 2)


def test_out_of_field_secret_raises() -> None:
    with pytest.raises(CryptoError, match="secrets"):
        shamir.split(np.array([P], dtype=np.uint64), 3, 2)


def test_bad_threshold_raises() -> None:
    with pytest.raises(CryptoError, match="threshold"):
        shamir.split(np.array([1], dtype=np.uint64), 3, 4)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=70))
def test_bytes_round_trip(secret: bytes) -> None:
    shares = shamir.split_bytes(secret, 4, 2)

    assert shamir.recover_bytes([2, 4], shares[[1, 3]], 2) == secret


def test_seed_shares_are_small() -> None:
    seed = os.urandom(32)

    shares = shamir.split_bytes(seed, 10, 6)

    assert shares.shape == (10, 1 + 11)  # the length, then 3-byte chunks
    assert shamir.recover_bytes(list(range(5, 11)), shares[4:], 6) == seed
