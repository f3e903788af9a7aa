"""The option groups of `fedavg`'s parameters: secure aggregation, DP, simulation, server optimiser.

Each group is a frozen dataclass that checks itself; the job parser builds it from a nested mapping
(`secagg: {threshold: 2}`), so an error names the key (`steps[0].fedavg.secagg.threshold`).
`RENAMED` maps the flat spellings of earlier releases to the nested ones, for a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from sharelearn.algorithms.horizontal.server_opt import SERVER_OPTIMIZERS, ServerOptimizerName
from sharelearn.core.errors import ConfigError

__all__ = ["RENAMED", "Compute", "DpOptions", "SecAggOptions", "ServerOptions", "SimulationOptions"]

Compute: TypeAlias = Literal["local", "ray"]

RENAMED: dict[str, str] = {
    "secagg_threshold": "secagg: {threshold: ...}",
    "secagg_neighbours": "secagg: {neighbours: ...}",
    "secagg_modulus_bits": "secagg: {modulus_bits: ...}",
    "secagg_frac_bits": "secagg: {frac_bits: ...}",
    "stage_timeout_s": "secagg: {stage_timeout_s: ...}",
    "dp_noise_multiplier": "dp: {noise_multiplier: ...}",
    "dp_clip_norm": "dp: {clip_norm: ...}",
    "dp_delta": "dp: {delta: ...}",
    "compute": "simulation: {compute: ...}",
    "simulate_clients": "simulation: {clients: ...}",
    "simulation_test_fraction": "simulation: {test_fraction: ...}",
    "ray_cpus": "simulation: {ray_cpus: ...}",
    "ray_actors": "simulation: {ray_actors: ...}",
    "server_optimizer": "server: {optimizer: ...}",
    "server_learning_rate": "server: {learning_rate: ...}",
    "server_beta1": "server: {beta1: ...}",
    "server_beta2": "server: {beta2: ...}",
    "server_tau": "server: {tau: ...}",
}


@dataclass(frozen=True, slots=True)
class SecAggOptions:
    """Secure aggregation (used when `secure_aggregation: true`).

    Attributes:
        threshold: t; 0 = a majority of each client's share holders.
        neighbours: 0 = full graph; else SecAgg+ with this many neighbours per client.
        modulus_bits / frac_bits: Z_2^k and the fixed-point scale of the updates.
        stage_timeout_s: a client silent this long in a stage counts as dropped.
    """

    threshold: int = 0
    neighbours: int = 0
    modulus_bits: int = 64
    frac_bits: int = 24
    stage_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.modulus_bits <= 64:
            raise ConfigError(f"fedavg.secagg.modulus_bits must be in 1..64, got {self.modulus_bits}")
        if not 0 <= self.frac_bits < self.modulus_bits - 1:
            raise ConfigError("fedavg.secagg.frac_bits must be in 0..modulus_bits-2")
        if self.threshold < 0 or self.neighbours < 0:
            raise ConfigError("fedavg.secagg.threshold and fedavg.secagg.neighbours must be >= 0")
        if not self.stage_timeout_s > 0:
            raise ConfigError(f"fedavg.secagg.stage_timeout_s must be > 0, got {self.stage_timeout_s}")


@dataclass(frozen=True, slots=True)
class DpOptions:
    """DP-FedAvg: `noise_multiplier` > 0 turns it on (noise std z * clip_norm on the sum).

    Attributes:
        noise_multiplier: z (0 = no DP).
        clip_norm: C, the L2 bound on each client's model delta.
        delta: the delta of the reported epsilon.
    """

    noise_multiplier: float = 0.0
    clip_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0:
            raise ConfigError(f"fedavg.dp.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.clip_norm > 0:
            raise ConfigError(f"fedavg.dp.clip_norm must be > 0, got {self.clip_norm}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"fedavg.dp.delta must be in (0, 1), got {self.delta}")

    @property
    def enabled(self) -> bool:
        return self.noise_multiplier > 0


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    """Where the clients run.

    Attributes:
        compute: "local" (clients are the job's parties) or "ray" (the server's own table is split
            into `clients` simulated clients run on a local Ray).
        clients / test_fraction / ray_cpus / ray_actors: the Ray simulation.
    """

    compute: Compute = "local"
    clients: int = 100
    test_fraction: float = 0.2
    ray_cpus: int = 2
    ray_actors: int = 2

    def __post_init__(self) -> None:
        if self.compute not in ("local", "ray"):
            raise ConfigError(f"fedavg.simulation.compute must be 'local' or 'ray', got {self.compute!r}")
        if not 2 <= self.clients <= 100_000:
            raise ConfigError(f"fedavg.simulation.clients must be in 2..100000, got {self.clients}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("fedavg.simulation.test_fraction must be in (0, 1)")
        if self.ray_cpus < 1 or self.ray_actors < 1:
            raise ConfigError("fedavg.simulation.ray_cpus and fedavg.simulation.ray_actors must be >= 1")


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The server optimiser (Reddi et al. 2021).

    Attributes:
        optimizer: "sgd" (FedAvg: w += learning_rate * mean update), "adam" (FedAdam), "yogi" (FedYogi).
        learning_rate / beta1 / beta2 / tau: the step, the moments' decay and the adaptivity floor.
    """

    optimizer: ServerOptimizerName = "sgd"
    learning_rate: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.optimizer not in SERVER_OPTIMIZERS:
            raise ConfigError(
                f"fedavg.server.optimizer must be one of {', '.join(SERVER_OPTIMIZERS)}, "
                f"got {self.optimizer!r}"
            )
        if not self.learning_rate > 0 or not self.tau > 0:
            raise ConfigError("fedavg.server.learning_rate and fedavg.server.tau must be > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("fedavg.server.beta1 and fedavg.server.beta2 must be in [0, 1)")
