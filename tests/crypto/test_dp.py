from __future__ import annotations

import itertools

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.crypto.dp import RDP_ORDERS, GaussianAccountant, clip_l2, gaussian_noise


def test_clip_l2_bounds_the_norm_and_keeps_small_updates() -> None:
    big = np.array([3.0, 4.0])
    clipped, norm = clip_l2(big, 1.0)
    assert norm == 5.0 and np.isclose(np.linalg.norm(clipped), 1.0) and np.allclose(clipped, [0.6, 0.8])
    small = np.array([0.1, -0.2])
    same, _ = clip_l2(small, 1.0)
    assert np.array_equal(same, small) and same is not small
    with pytest.raises(CryptoError, match="clip norm"):
        clip_l2(big, 0.0)
    with pytest.raises(CryptoError, match="NaN"):
        clip_l2(np.array([np.nan]), 1.0)


def test_gaussian_noise_has_the_requested_spread() -> None:
    noise = gaussian_noise(200_000, 2.5, np.random.default_rng(1))
    assert abs(float(noise.mean())) < 0.03 and abs(float(noise.std()) - 2.5) < 0.03
    with pytest.raises(CryptoError):
        gaussian_noise(3, -1.0)


def test_accountant_matches_dp_accounting_and_grows_with_rounds() -> None:
    acc = GaussianAccountant(noise_multiplier=1.1, sampling_rate=0.1, delta=1e-5)
    eps = [acc.step() for _ in range(5)]

    reference = rdp.RdpAccountant(list(RDP_ORDERS))
    reference.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 5)
    assert eps[-1] == pytest.approx(reference.get_epsilon(1e-5))
    default_orders = rdp.RdpAccountant()
    default_orders.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 5)
    assert eps[-1] == pytest.approx(default_orders.get_epsilon(1e-5), rel=0.05)
    assert all(a < b for a, b in itertools.pairwise(eps))
    assert GaussianAccountant(1.1, 0.1, 1e-5).epsilon() == 0.0
    # More noise, smaller budget.
    quiet = GaussianAccountant(noise_multiplier=4.0, sampling_rate=0.1, delta=1e-5)
    assert quiet.step(5) < eps[-1]
    with pytest.raises(ConfigError, match="sampling rate"):
        GaussianAccountant(1.0, 0.0, 1e-5)
    with pytest.raises(ConfigError, match="delta"):
        GaussianAccountant(1.0, 0.5, 1.0)
