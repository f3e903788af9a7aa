"""`shamir.split_at` / `recover_many`: the batched forms secure aggregation uses."""

from __future__ import annotations

import numpy as np
import pytest

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import shamir


def test_split_at_any_holders_recovers_from_any_threshold_subset() -> None:
    secrets = np.array([0, 1, shamir.PRIME - 1, 1234567890, 2**24 - 1], dtype=np.uint64)
    xs = [3, 5, 17, 40, 99, 100, 2, 1]
    shares = shamir.split_at(secrets, xs, 4)
    assert shares.shape == (len(xs), secrets.size) and shares.dtype == np.uint64
    assert int(shares.max()) < shamir.PRIME
    for rows in ([0, 1, 2, 3], [4, 5, 6, 7], [1, 3, 5, 7, 0]):
        assert np.array_equal(shamir.recover([xs[r] for r in rows], shares[rows], 4), secrets)
    # Fewer than t shares say nothing: 3 shares fit a different secret just as well.
    assert not np.array_equal(shamir.recover(xs[:3], shares[:3], 3), secrets)


def test_split_at_matches_split_at_the_same_points_and_large_thresholds() -> None:
    secrets = np.arange(7, dtype=np.uint64) * np.uint64(10**8)
    full = shamir.split(secrets, 12, 5)
    # The same polynomial family: any 5 of `split`'s shares and `split_at`'s agree on the secret.
    assert np.array_equal(shamir.recover([1, 4, 6, 9, 12], full[[0, 3, 5, 8, 11]], 5), secrets)
    big = shamir.split_at(secrets, list(range(1, 301)), 200)  # term sums beyond 8 terms
    assert np.array_equal(shamir.recover(list(range(101, 301)), big[100:], 200), secrets)


def test_recover_many_rebuilds_each_group_from_its_own_holders() -> None:
    rng = np.random.default_rng(1)
    groups, t = 6, 3
    secrets = rng.integers(0, shamir.PRIME, (groups, 4), dtype=np.uint64)
    xs = np.array([rng.choice(np.arange(1, 50), t, replace=False) for _ in range(groups)])
    shares = np.stack([shamir.split_at(secrets[g], xs[g].tolist(), t) for g in range(groups)])
    assert np.array_equal(shamir.recover_many(xs, shares, t), secrets)
    # A tampered share changes only its own group's result.
    shares[2, 0, 1] ^= np.uint64(1)
    out = shamir.recover_many(xs, shares, t)
    assert not np.array_equal(out[2], secrets[2]) and np.array_equal(
        np.delete(out, 2, 0), np.delete(secrets, 2, 0)
    )


def test_batched_forms_refuse_bad_input() -> None:
    with pytest.raises(CryptoError, match="duplicate"):
        shamir.split_at(np.array([1], dtype=np.uint64), [2, 2], 2)
    with pytest.raises(CryptoError, match=r"\[1, p\)"):
        shamir.split_at(np.array([1], dtype=np.uint64), [0, 1], 2)
    with pytest.raises(CryptoError, match="secrets must lie"):
        shamir.split_at(np.array([shamir.PRIME], dtype=np.uint64), [1, 2], 2)
    shares = shamir.split_at(np.array([5], dtype=np.uint64), [1, 2, 3], 3)
    with pytest.raises(CryptoError, match="needs 3 shares"):
        shamir.recover_many(np.array([[1, 2]]), shares[None, :2], 3)
    with pytest.raises(CryptoError, match="shape"):
        shamir.recover_many(np.array([[1, 2, 3]]), shares[None, :2], 2)
    with pytest.raises(CryptoError, match="duplicate"):
        shamir.recover_many(np.array([[1, 1, 3]]), shares[None], 3)


def test_recover_many_refuses_duplicate_or_zero_x_in_any_group() -> None:
    shares = shamir.split_at(np.array([5, 6], dtype=np.uint64), [1, 2, 3], 2)
    groups = np.stack([shares, shares])
    with pytest.raises(CryptoError, match=r"duplicate Shamir x-coordinates: \[2\]"):
        shamir.recover_many(np.array([[1, 2, 3], [2, 2, 3]]), groups, 2)
    with pytest.raises(CryptoError, match=r"\[1, p\)"):
        shamir.recover_many(np.array([[1, 2, 3], [0, 2, 3]]), groups, 2)
    # The same shares listed in another order, with their x-coordinates, recover the same secrets.
    shuffled = np.stack([shares, shares[[2, 0, 1]]])
    assert shamir.recover_many(np.array([[1, 2, 3], [3, 1, 2]]), shuffled, 2).tolist() == [[5, 6], [5, 6]]
