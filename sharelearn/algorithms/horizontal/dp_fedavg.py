"""DP-FedAvg (McMahan et al. 2018): client-level clipping, server noise, per-round (epsilon, delta).

Wiring around `fedavg`: with `dp.noise_multiplier` > 0 each client clips its model delta to L2 norm
`dp.clip_norm` (`clip_update`) and counts with weight 1 (weighting by sample count would let one
client's influence exceed the clip); the server adds discrete Gaussian noise of std z C to each
coordinate of the sum of clipped deltas, on a fixed grid (`crypto.dp.add_gaussian_noise`, safe in
floating point), before dividing by the number of contributors (`noisy_average`), and charges the
round to a `GaussianAccountant` (RDP of the discrete Gaussian, sampling rate = the fraction of
clients invited per round). With secure aggregation the server adds the noise to the unmasked sum:
central DP, trusting the server with the sum only, as McMahan et al. do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sharelearn.core.errors import ConfigError
from sharelearn.core.types import F64Array
from sharelearn.crypto.dp import GaussianAccountant, add_gaussian_noise, clip_l2
from sharelearn.crypto.rng import Rng

__all__ = ["DpConfig", "DpTracker", "clip_update", "noisy_average"]


@dataclass(frozen=True, slots=True)
class DpConfig:
    """DP-FedAvg settings.

    Attributes:
        clip_norm: C, the L2 bound on each client's model delta.
        noise_multiplier: z; the noise std on the sum is z * C.
        delta: the delta at which epsilon is reported.
    """

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ConfigError(f"fedavg.dp.clip_norm must be > 0, got {self.clip_norm}")
        if not self.noise_multiplier > 0:
            raise ConfigError(f"fedavg.dp.noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"fedavg.dp.delta must be in (0, 1), got {self.delta}")


def clip_update(delta: F64Array, cfg: DpConfig) -> F64Array:
    """A client's model delta clipped to L2 norm `cfg.clip_norm`."""
    clipped, _ = clip_l2(delta, cfg.clip_norm)
    return clipped


def noisy_average(total: F64Array, contributors: float, cfg: DpConfig, rng: Rng | None = None) -> F64Array:
    """(sum of clipped deltas + discrete Gaussian noise of std z C on a fixed grid) / contributors.

    The noise comes from `crypto.dp.add_gaussian_noise` (exact discrete Gaussian, OS CSPRNG unless
    a test passes a seeded `Rng`), never from the job's seeded numpy generator.
    """
    if contributors <= 0:
        raise ConfigError("DP-FedAvg round had no contributing client")
    noisy = add_gaussian_noise(total, cfg.noise_multiplier, cfg.clip_norm, rng)
    return np.asarray(noisy / contributors, dtype=np.float64)


@dataclass
class DpTracker:
    """Charges each round to the accountant and keeps epsilon per round."""

    cfg: DpConfig
    sampling_rate: float

    def __post_init__(self) -> None:
        self.accountant = GaussianAccountant(self.cfg.noise_multiplier, self.sampling_rate, self.cfg.delta)
        self.epsilons: list[float] = []

    def charge_round(self) -> float:
        eps = self.accountant.step(1)
        self.epsilons.append(eps)
        return eps
