"""Server optimisers of federated averaging (Reddi et al. 2021, "Adaptive Federated Optimization").

The round's average client update Δ (the weighted mean of w_k - w) is a pseudo-gradient step:
- "sgd" (FedAvg): w += η Δ (η = server.learning_rate; η = 1 is McMahan et al.'s FedAvg);
- "adam" (FedAdam): m = β1 m + (1 - β1) Δ, v = β2 v + (1 - β2) Δ², w += η m / (√v + τ);
- "yogi" (FedYogi): as FedAdam with v = v - (1 - β2) Δ² sign(v - Δ²).
No bias correction, as in the paper (Algorithm 2). The server runs it on the aggregate alone: it
learns nothing beyond the aggregate it already holds.

Convergence (`Convergence`): training stops when the aggregated training loss has improved by less
than a relative `tolerance` over the last `patience` rounds, or at the round limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import numpy as np

from sharelearn.core.errors import ConfigError
from sharelearn.core.types import F64Array

__all__ = ["SERVER_OPTIMIZERS", "Convergence", "ServerOptimizer", "ServerOptimizerName"]

ServerOptimizerName: TypeAlias = Literal["sgd", "adam", "yogi"]
SERVER_OPTIMIZERS: tuple[ServerOptimizerName, ...] = ("sgd", "adam", "yogi")


@dataclass
class ServerOptimizer:
    """Applies one round's average update to the global weights; keeps FedAdam/FedYogi moments."""

    kind: ServerOptimizerName = "sgd"
    learning_rate: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: F64Array | None = field(default=None, repr=False)
    v: F64Array | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in SERVER_OPTIMIZERS:
            raise ConfigError(
                f"fedavg.server.optimizer must be one of {', '.join(SERVER_OPTIMIZERS)}, got {self.kind!r}"
            )
        if not self.learning_rate > 0 or not self.tau > 0:
            raise ConfigError("fedavg.server.learning_rate and fedavg.server.tau must be > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("fedavg.server.beta1 and fedavg.server.beta2 must be in [0, 1)")

    def step(self, weights: F64Array, delta: F64Array) -> F64Array:
        """The new global weights after the average update `delta`."""
        if self.kind == "sgd":
            return weights + self.learning_rate * delta
        if self.m is None or self.v is None:
            self.m = np.zeros_like(delta)
            self.v = np.full_like(delta, self.tau**2)  # the paper's v_{-1} >= tau^2
        self.m = self.beta1 * self.m + (1 - self.beta1) * delta
        square = delta * delta
        if self.kind == "adam":
            self.v = self.beta2 * self.v + (1 - self.beta2) * square
        else:
            self.v = self.v - (1 - self.beta2) * square * np.sign(self.v - square)
        return weights + self.learning_rate * self.m / (np.sqrt(self.v) + self.tau)


@dataclass
class Convergence:
    """Stop when the loss improved by less than `tolerance` (relative) over `patience` rounds."""

    patience: int = 5
    tolerance: float = 1e-3
    losses: list[float] = field(default_factory=list)

    def done(self, loss: float) -> bool:
        """Record a round's training loss; True once training has converged."""
        self.losses.append(float(loss))
        if self.patience <= 0 or len(self.losses) <= self.patience:
            return False
        before = min(self.losses[: -self.patience])
        recent = min(self.losses[-self.patience :])
        # Relative to the loss, with a floor: a loss sliding towards 0 (separable data) also stops.
        return bool(recent > before - self.tolerance * max(abs(before), 0.1))
