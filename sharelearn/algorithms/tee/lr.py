"""In-enclave logistic regression, streamed block by block under the memory cap.

Full-batch L-BFGS on the L2-regularised log-loss of standardised features: each objective
evaluation is one streaming pass over the joined blocks (loss and gradient are sums over rows),
so the optimum is the one in-memory training would reach; only the number of passes differs.
The objective is scikit-learn's (C · Σ logloss + ½‖w‖², intercept unpenalised), so the pooled
baseline is `sklearn.linear_model.LogisticRegression` on the same standardised data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from sharelearn.algorithms.tee.data import BlockSource
from sharelearn.core.codec import encode, expect_array
from sharelearn.core.errors import ConfigError

__all__ = ["LrModel", "LrParams", "baseline_scores", "train_lr"]


@dataclass(frozen=True, slots=True)
class LrParams:
    """C: inverse L2 strength (as scikit-learn); max_iter: L-BFGS iterations (one pass each)."""

    c: float = 1.0
    max_iter: int = 200

    def __post_init__(self) -> None:
        if not self.c > 0:
            raise ConfigError(f"tee_train.c must be > 0, got {self.c}")
        if self.max_iter < 1:
            raise ConfigError(f"tee_train.max_iter must be >= 1, got {self.max_iter}")


@dataclass
class LrModel:
    """Weights on standardised features, with the standardisation."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    history: dict[str, list[float]] = field(default_factory=dict)
    kind: str = "lr"

    def predict_block(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def to_bytes(self) -> bytes:
        return encode(
            {
                "kind": "lr",
                "mean": self.mean,
                "scale": self.scale,
                "coef": self.coef,
                "b": float(self.intercept),
            }
        )

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> LrModel:
        mean, scale, coef = (
            expect_array(msg[k], peer="model", tag=k, dtype=np.float64) for k in ("mean", "scale", "coef")
        )
        return cls(mean, scale, coef, float(msg["b"]))


def _standardisation(src: BlockSource) -> tuple[np.ndarray, np.ndarray]:
    s = np.zeros(src.n_features)
    ss = np.zeros(src.n_features)
    for x, _ in src.blocks():
        s += x.sum(axis=0)
        ss += (x * x).sum(axis=0)
    mean = s / src.n_rows
    var = np.maximum(ss / src.n_rows - mean * mean, 0.0)
    scale = np.sqrt(var)
    scale[scale == 0] = 1.0
    return mean, scale


def train_lr(src: BlockSource, params: LrParams) -> LrModel:
    """Train by streaming passes; every pass holds one block at a time."""
    mean, scale = _standardisation(src)
    d = src.n_features
    losses: list[float] = []

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        loss, gw, gb = 0.0, np.zeros(d), 0.0
        for x, y in src.blocks():
            xs = (x - mean) / scale
            z = xs @ w + b
            loss += float(np.sum(np.logaddexp(0.0, z) - y * z))
            r = 1.0 / (1.0 + np.exp(-z)) - y
            gw += xs.T @ r
            gb += float(r.sum())
        total = params.c * loss + 0.5 * float(w @ w)
        losses.append(loss / src.n_rows)
        return total, np.concatenate([params.c * gw + w, [params.c * gb]])

    res = minimize(fun, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": params.max_iter})
    return LrModel(mean, scale, res.x[:d], float(res.x[d]), {"loss": losses})


def baseline_scores(x: np.ndarray, y: np.ndarray, params: LrParams) -> np.ndarray:
    """scikit-learn's LogisticRegression on the pooled standardised data (outside any enclave)."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    xs = (x - mean) / scale
    clf = LogisticRegression(C=params.c, max_iter=max(params.max_iter, 1000)).fit(xs, y)
    return np.asarray(clf.predict_proba(xs)[:, 1])
