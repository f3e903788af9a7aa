"""Differential privacy for federated averaging: L2 clipping, Gaussian noise, an RDP accountant.

DP-FedAvg (McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially Private Recurrent Language
Models"): each client's update is clipped to L2 norm C, the server adds N(0, (z C)^2) to every
coordinate of the sum. One round is the sampled Gaussian mechanism with sampling rate q (the
fraction of clients taking part) and noise multiplier z; its Renyi-DP cost is composed over rounds
and converted to (epsilon, delta) by Google's maintained `dp_accounting` library (Mironov 2017,
Mironov, Talwar, Zhang 2019), never by a home-made formula.

The privacy unit is a client (user-level DP): adding or removing one client's whole dataset
changes the output distribution by at most (epsilon, delta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.types import F64Array

__all__ = ["RDP_ORDERS", "GaussianAccountant", "clip_l2", "gaussian_noise"]

# Integer Renyi orders (plus a long tail): the sampled-Gaussian RDP has a closed-form series at
# integer orders, while dp_accounting's default fractional orders need a slow numerical series
# (~8x the time per round) and change epsilon by well under 1% in the regimes FedAvg uses.
RDP_ORDERS: tuple[float, ...] = (*range(2, 65), 128, 256, 512)


def clip_l2(update: F64Array, clip_norm: float) -> tuple[F64Array, float]:
    """Scale `update` so its L2 norm is at most `clip_norm`; return it and the norm before clipping.

    Raises:
        CryptoError: on a non-positive clip norm or a non-finite update.
    """
    if not clip_norm > 0 or not math.isfinite(clip_norm):
        raise CryptoError(f"clip norm must be a positive finite number, got {clip_norm}")
    values = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(values))
    if not math.isfinite(norm):
        raise CryptoError("cannot clip an update with NaN or infinite values")
    if norm <= clip_norm:
        return values.copy(), norm
    return values * (clip_norm / norm), norm


def gaussian_noise(
    shape: int | tuple[int, ...], std: float, rng: np.random.Generator | None = None
) -> F64Array:
    """Draw N(0, std^2) noise of `shape` (from fresh OS entropy unless a generator is given)."""
    if not std >= 0 or not math.isfinite(std):
        raise CryptoError(f"noise standard deviation must be finite and >= 0, got {std}")
    gen = rng if rng is not None else np.random.default_rng()
    return gen.normal(0.0, std, size=shape)


@dataclass
class GaussianAccountant:
    """Tracks (epsilon, delta) of repeated sampled Gaussian mechanisms with dp_accounting's RDP.

    Attributes:
        noise_multiplier: z, the noise std divided by the clip norm.
        sampling_rate: q, the probability that a client takes part in a round (1.0 = every client).
        delta: the target delta.
        rounds: how many rounds have been composed so far.
    """

    noise_multiplier: float
    sampling_rate: float
    delta: float
    rounds: int = 0
    _accountant: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ConfigError(f"dp noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0.0 < self.sampling_rate <= 1.0:
            raise ConfigError(f"dp sampling rate must be in (0, 1], got {self.sampling_rate}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"dp delta must be in (0, 1), got {self.delta}")

    def step(self, rounds: int = 1) -> float:
        """Compose `rounds` more rounds; return the epsilon spent so far."""
        if rounds < 0:
            raise ConfigError(f"cannot compose a negative number of rounds ({rounds})")
        import dp_accounting
        from dp_accounting import rdp

        if self._accountant is None:
            self._accountant = rdp.RdpAccountant(list(RDP_ORDERS))
        if rounds:
            event = dp_accounting.PoissonSampledDpEvent(
                self.sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier)
            )
            self._accountant.compose(event, rounds)
        self.rounds += rounds
        return self.epsilon()

    def epsilon(self) -> float:
        """Epsilon at `delta` after the rounds composed so far (0.0 before the first)."""
        if self.rounds == 0 or self._accountant is None:
            return 0.0
        return float(self._accountant.get_epsilon(self.delta))
