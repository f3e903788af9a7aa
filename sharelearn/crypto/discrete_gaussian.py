"""Exact discrete Gaussian and discrete Laplace samplers over vectors (Canonne, Kamath, Steinke 2020).

"The Discrete Gaussian for Differential Privacy" (NeurIPS 2020), Algorithms 1-3, with every
step in exact integer arithmetic: no floating point touches a sample, so the floating-point
attacks on textbook Laplace/Gaussian samplers (Mironov 2012, "On Significance of the Least
Significant Bits for Differential Privacy") have nothing to read. The only randomness is uniform
integers drawn by rejection from `crypto.rng` bytes (the OS CSPRNG unless a test passes a seeded
`Rng`).

* Algorithm 1, Bernoulli(exp(-g)) for rational g = num/den: for g in [0, 1], K = 1, 2, ... while
  Bernoulli(g/K) succeeds, output K odd; for g > 1, floor(g) Bernoulli(exp(-1)) trials must all
  succeed, then Bernoulli(exp(-(g - floor g))).
* Algorithm 2, discrete Laplace with integer scale t: U uniform in [0, t), keep it with probability
  exp(-U/t); V ~ Geometric(1 - exp(-1)); a sign B; reject (B = 1, U = 0, V = 0); Y = (1-2B)(U + tV).
* Algorithm 3, discrete Gaussian N_Z(0, sigma^2) for sigma^2 = t*m (integers): Y from Algorithm 2
  with scale t, kept with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)) = exp(-(|Y|-m)^2/(2tm)).
  CKS prove this exact for any positive integer t; t near sigma keeps the rejection rate low.

Vectorised: each algorithm runs on whole arrays, looping only over the (few) rounds of its
rejection loops, never over elements. Every intermediate fits in uint64 for sigma <= 2^26
(`MAX_SIGMA`): den*K <= 2^53 * K, and an element whose K would pass `_K_MAX` (probability
< 1/1000!) or whose |Y| - m passes 2^32 (probability ~e^-64) finishes in Python integers, so the
output is exact in every case.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import BoolArray, I64Array, U64Array
from sharelearn.crypto.rng import Rng, random_bits, random_u64

__all__ = ["MAX_SIGMA", "bernoulli_exp", "discrete_gaussian", "discrete_laplace"]

MAX_SIGMA = 1 << 26
_K_MAX = 1 << 10  # keeps den * K below 2^64 for den <= 2^54
_D_MAX = np.uint64(1 << 32)  # (|Y| - m)^2 fits in uint64 below this
_ONE = np.uint64(1)


def _bit_mask(bound: U64Array) -> U64Array:
    """Per element, the smallest 2^k - 1 that is >= bound - 1 (bit smearing, exact in uint64)."""
    mask = bound - _ONE
    for shift in (1, 2, 4, 8, 16, 32):
        mask |= mask >> np.uint64(shift)
    return mask


def _uniform_below(bound: U64Array, rng: Rng | None) -> U64Array:
    """Exactly uniform integers in [0, bound) per element (bound >= 1): masked draws, rejection."""
    mask = _bit_mask(bound)
    out = random_u64(bound.size, rng) & mask
    bad = np.flatnonzero(out >= bound)
    while bad.size:  # each draw is accepted with probability > 1/2
        redraw = random_u64(bad.size, rng) & mask[bad]
        ok = redraw < bound[bad]
        out[bad[ok]] = redraw[ok]
        bad = bad[~ok]
    return out


def _uniform_int(bound: int, rng: Rng | None) -> int:
    """An exactly uniform Python integer in [0, bound), bound >= 1."""
    bits = max(1, (bound - 1).bit_length())
    while True:
        value = int.from_bytes(random_u64(-(-bits // 64), rng).tobytes(), "little") & ((1 << bits) - 1)
        if value < bound:
            return value


def _bernoulli_exp_small_exact(num: int, den: int, k: int, rng: Rng | None) -> bool:
    """Algorithm 1 for g = num/den in [0, 1], continued from K = k, in Python integers."""
    while _uniform_int(den * k, rng) < num:
        k += 1
    return k % 2 == 1


def _bernoulli_exp_small(num: U64Array, den: U64Array, rng: Rng | None) -> BoolArray:
    """Bernoulli(exp(-num/den)) per element, for 0 <= num <= den <= 2^54 (CKS Algorithm 1)."""
    k = np.ones(num.size, dtype=np.uint64)
    active = np.arange(num.size)
    while active.size:
        if int(k[active].max()) >= _K_MAX:  # astronomically rare: finish those in Python ints
            slow = active[k[active] >= _K_MAX]
            for i in slow.tolist():
                k[i] = 1 if _bernoulli_exp_small_exact(int(num[i]), int(den[i]), int(k[i]), rng) else 2
            active = active[k[active] < _K_MAX]
            continue
        success = _uniform_below(den[active] * k[active], rng) < num[active]
        k[active[success]] += _ONE
        active = active[success]
    odd: BoolArray = (k & _ONE) == _ONE
    return odd


def bernoulli_exp(num: U64Array, den: U64Array, rng: Rng | None = None) -> BoolArray:
    """Bernoulli(exp(-num/den)) per element for any num >= 0, 1 <= den <= 2^54 (CKS Algorithm 1)."""
    num = np.asarray(num, dtype=np.uint64)
    den = np.asarray(den, dtype=np.uint64)
    whole, frac = num // den, num % den
    alive = np.ones(num.size, dtype=bool)
    trial = np.uint64(0)
    ones = np.ones(num.size, dtype=np.uint64)
    while True:  # floor(g) trials of Bernoulli(exp(-1)), stopping at the first failure
        pending = np.flatnonzero(alive & (whole > trial))
        if not pending.size:
            break
        alive[pending] = _bernoulli_exp_small(ones[pending], ones[pending], rng)
        trial += _ONE
    out = np.zeros(num.size, dtype=bool)
    last = np.flatnonzero(alive)
    out[last] = _bernoulli_exp_small(frac[last], den[last], rng)
    return out


def _geometric_exp1(n: int, rng: Rng | None) -> U64Array:
    """V per element: the number of Bernoulli(exp(-1)) successes before the first failure."""
    v = np.zeros(n, dtype=np.uint64)
    active = np.arange(n)
    ones = np.ones(n, dtype=np.uint64)
    while active.size:
        success = _bernoulli_exp_small(ones[: active.size], ones[: active.size], rng)
        v[active[success]] += _ONE
        active = active[success]
    return v


def _laplace_batch(n: int, t: int, rng: Rng | None) -> I64Array:
    """One round of CKS Algorithm 2 on n candidates; returns the accepted ones (fewer than n)."""
    scale = np.full(n, t, dtype=np.uint64)
    u = _uniform_below(scale, rng)
    keep = bernoulli_exp(u, scale, rng)
    u = u[keep]
    v = _geometric_exp1(u.size, rng)
    negative = random_bits(u.size, rng).astype(bool)
    keep = ~(negative & (u == 0) & (v == 0))  # +0 and -0 would count zero twice
    magnitude = (u[keep] + np.uint64(t) * v[keep]).astype(np.int64)
    signed: I64Array = np.where(negative[keep], -magnitude, magnitude)
    return signed


def _collect(n: int, batch: int, draw: Callable[[int], I64Array]) -> I64Array:
    """Run a rejection sampler in rounds of about twice what is missing until n are accepted."""
    parts: list[I64Array] = []
    have = 0
    while have < n:
        got = draw(max(batch, 2 * (n - have)))
        parts.append(got)
        have += got.size
    return np.concatenate(parts)[:n]


def discrete_laplace(n: int, t: int, rng: Rng | None = None) -> I64Array:
    """n independent samples of the discrete Laplace distribution P(y) ~ exp(-|y|/t) (CKS Alg. 2)."""
    if not 1 <= t <= 1 << 40:
        raise CryptoError(f"discrete Laplace scale must be an integer in [1, 2^40], got {t}")
    return _collect(n, 1024, lambda size: _laplace_batch(size, t, rng))


def _gaussian_batch(n: int, t: int, m: int, rng: Rng | None) -> I64Array:
    y = discrete_laplace(n, t, rng)
    dist = np.abs(np.abs(y) - np.int64(m)).astype(np.uint64)
    den = np.uint64(2 * t * m)
    keep = np.zeros(y.size, dtype=bool)
    fast = dist < _D_MAX
    keep[fast] = bernoulli_exp(dist[fast] * dist[fast], np.full(int(fast.sum()), den), rng)
    for i in np.flatnonzero(~fast).tolist():  # |Y| beyond 2^32: exact in Python integers
        whole, frac = divmod(int(dist[i]) ** 2, int(den))
        alive = all(_bernoulli_exp_small_exact(1, 1, 1, rng) for _ in range(whole))
        keep[i] = alive and _bernoulli_exp_small_exact(frac, int(den), 1, rng)
    return y[keep]


def discrete_gaussian(n: int, t: int, m: int, rng: Rng | None = None) -> I64Array:
    """n independent samples of N_Z(0, sigma^2) with sigma^2 = t * m exactly (CKS Algorithm 3).

    Raises:
        CryptoError: if t or m is not a positive integer or sigma^2 passes MAX_SIGMA^2.
    """
    if t < 1 or m < 1 or t * m > MAX_SIGMA * MAX_SIGMA:
        raise CryptoError(f"discrete Gaussian needs 1 <= t, m and t*m <= 2^52, got t={t}, m={m}")
    if n < 0:
        raise CryptoError(f"cannot draw {n} samples")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return _collect(n, 1024, lambda size: _gaussian_batch(size, t, m, rng))
