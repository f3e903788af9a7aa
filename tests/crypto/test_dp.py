from __future__ import annotations

import itertools
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from scipy import stats

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.crypto.discrete_gaussian import bernoulli_exp, discrete_gaussian, discrete_laplace
from sharelearn.crypto.dp import (
    GRID_SLACK,
    RDP_ORDERS,
    GaussianAccountant,
    add_gaussian_noise,
    clip_l2,
    noise_grid,
    subsampled_rdp,
)
from sharelearn.crypto.rng import SeededRng


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


def _pmf_chi_square(samples: np.ndarray, log_weight: np.ndarray, support: np.ndarray) -> float:
    """p-value of a chi-square test of `samples` against weights on `support` (tails pooled)."""
    probs = np.exp(log_weight - log_weight.max())
    probs /= probs.sum()
    observed = np.array([(samples == y).sum() for y in support], dtype=np.float64)
    expected = probs * samples.size
    keep = expected >= 5
    obs = np.append(observed[keep], samples.size - observed[keep].sum())
    exp = np.append(expected[keep], samples.size - expected[keep].sum())
    return float(stats.chisquare(obs, exp).pvalue)


@pytest.mark.parametrize(("t", "m"), [(1, 1), (3, 3), (4, 6)])
def test_discrete_gaussian_has_the_exact_pmf(t: int, m: int) -> None:
    sigma2 = t * m
    support = np.arange(-12 * t, 12 * t + 1)

    samples = discrete_gaussian(200_000, t, m, SeededRng(t * 100 + m))

    assert _pmf_chi_square(samples, -(support.astype(np.float64) ** 2) / (2 * sigma2), support) > 1e-4
    assert samples.dtype == np.int64 and samples.shape == (200_000,)


def test_discrete_laplace_has_the_exact_pmf() -> None:
    support = np.arange(-80, 81)

    samples = discrete_laplace(200_000, 5, SeededRng(7))

    assert _pmf_chi_square(samples, -np.abs(support).astype(np.float64) / 5, support) > 1e-4


@pytest.mark.parametrize(("num", "den"), [(0, 1), (3, 10), (1, 1), (5, 2), (7, 1), (123_456_789, 2**40)])
def test_bernoulli_exp_succeeds_with_probability_exp_minus_num_over_den(num: int, den: int) -> None:
    n = 100_000
    hits = bernoulli_exp(np.full(n, num, np.uint64), np.full(n, den, np.uint64), SeededRng(num + den))

    p = math.exp(-num / den)
    assert abs(float(hits.mean()) - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_large_sigma_discrete_gaussian_is_a_fine_normal() -> None:
    grid = noise_grid(100_000, 1.0, 0.5)
    samples = discrete_gaussian(100_000, grid.t, grid.m, SeededRng(3))

    sigma = math.sqrt(grid.t * grid.m)
    assert stats.kstest(samples / sigma, "norm").pvalue > 1e-4
    assert abs(float(samples.var()) / sigma**2 - 1) < 0.02


def test_noise_grid_bounds_the_rounding_and_never_lowers_the_noise() -> None:
    for dim, z, clip in [(1, 1.0, 1.0), (100_000, 1.1, 0.5), (7, 0.3, 1e-3), (10**7, 4.0, 2.0)]:
        grid = noise_grid(dim, z, clip)

        assert math.sqrt(dim) * grid.resolution <= GRID_SLACK * clip
        assert math.log2(grid.resolution).is_integer()
        assert z * clip <= grid.std < z * clip * 1.001
    with pytest.raises(CryptoError, match="exact sampler"):
        noise_grid(10**12, 50.0, 1.0)
    with pytest.raises(CryptoError):
        noise_grid(10, 0.0, 1.0)


def test_noisy_outputs_lie_on_a_grid_that_does_not_depend_on_the_input() -> None:
    # Mironov's attack reads the set of doubles a mechanism can output from one input: with a
    # floating-point sampler that set differs between neighbouring inputs. Here every output is
    # res * integer for any input, and the noise drawn does not depend on the input at all.
    a = np.full(1000, 0.123456789)
    b = np.full(1000, 0.123456789 + 3e-9)  # a neighbouring sum, off the grid differently

    out_a = add_gaussian_noise(a, 1.0, 1.0, SeededRng(11))
    out_b = add_gaussian_noise(b, 1.0, 1.0, SeededRng(11))

    res = noise_grid(1000, 1.0, 1.0).resolution
    for out, x in ((out_a, a), (out_b, b)):
        steps = out / res
        assert np.array_equal(steps, np.rint(steps))  # exactly on the grid
        assert np.array_equal(out - np.rint(x / res) * res, out_a - np.rint(a / res) * res)
    assert abs(float(out_a.std()) - 1.0) < 0.1


def test_add_gaussian_noise_has_the_requested_spread_and_refuses_bad_sums() -> None:
    noisy = add_gaussian_noise(np.full((200, 500), 3.0), 2.5, 1.0)  # OS entropy

    assert noisy.shape == (200, 500)
    assert abs(float(noisy.mean()) - 3.0) < 0.03 and abs(float(noisy.std()) - 2.5) < 0.03
    with pytest.raises(CryptoError, match="NaN"):
        add_gaussian_noise(np.array([np.nan]), 1.0, 1.0)


def test_accountant_charges_the_discrete_gaussian_at_its_effective_multiplier() -> None:
    full = GaussianAccountant(noise_multiplier=1.1, sampling_rate=1.0, delta=1e-5)
    eps_full = full.step(5)
    reference = rdp.RdpAccountant(list(RDP_ORDERS))
    reference.compose(dp_accounting.GaussianDpEvent(full.effective_multiplier), 5)

    # Every client every round: exactly the continuous Gaussian's RDP (CKS 2020).
    assert eps_full == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert full.effective_multiplier == pytest.approx(1.1 / (1 + GRID_SLACK))

    acc = GaussianAccountant(noise_multiplier=1.1, sampling_rate=0.1, delta=1e-5)
    eps = [acc.step() for _ in range(5)]
    poisson = rdp.RdpAccountant(list(RDP_ORDERS))
    poisson.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 5)
    # Sampled: the general bound (Zhu & Wang 2019) is above the Gaussian-specific one, not far.
    assert poisson.get_epsilon(1e-5) < eps[-1] < 1.5 * poisson.get_epsilon(1e-5)
    assert all(a < b for a, b in itertools.pairwise(eps))
    assert GaussianAccountant(1.1, 0.1, 1e-5).epsilon() == 0.0
    # More noise, smaller budget.
    quiet = GaussianAccountant(noise_multiplier=4.0, sampling_rate=0.1, delta=1e-5)
    assert quiet.step(5) < eps[-1]
    with pytest.raises(ConfigError, match="sampling rate"):
        GaussianAccountant(1.0, 0.0, 1e-5)
    with pytest.raises(ConfigError, match="delta"):
        GaussianAccountant(1.0, 0.5, 1.0)


def test_subsampled_rdp_is_the_base_curve_without_sampling_and_shrinks_with_q() -> None:
    assert subsampled_rdp(8, 1.0, 0.25) == 8 * 0.25
    values = [subsampled_rdp(8, q, 0.25) for q in (0.01, 0.1, 0.5, 0.9)]
    assert all(a < b for a, b in itertools.pairwise(values)) and values[-1] < 8 * 0.25 * 1.5
