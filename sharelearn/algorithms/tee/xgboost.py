"""In-enclave native XGBoost in external-memory mode (`xgboost.DataIter` + `ExtMemQuantileDMatrix`).

The iterator feeds XGBoost one decrypted joined block at a time (each held against the memory
cap); XGBoost sketches quantiles across batches and keeps its quantised pages in a cache under
the enclave's private scratch directory: `SML_ENCLAVE_SCRATCH`, which the Gramine manifest points
at a mount Gramine encrypts with an MRENCLAVE-bound key (`sgx.render_manifest`), so the host sees
only ciphertext; in the simulation a 0700 temp dir (TEE.md §2.4: simulation gives no secrecy
from the host).
The pooled baseline is the same library in memory (`QuantileDMatrix`) with the same parameters.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb

from sharelearn.algorithms.tee.data import BlockSource
from sharelearn.core.errors import ConfigError

__all__ = ["XgbModel", "XgbParams", "baseline_scores", "train_xgboost"]


@dataclass(frozen=True, slots=True)
class XgbParams:
    """Booster parameters passed to xgboost.train (hist, binary:logistic, one thread)."""

    num_trees: int = 30
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bin: int = 32
    reg_lambda: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.num_trees <= 10_000:
            raise ConfigError(f"tee_train.num_trees must be in 1..10000, got {self.num_trees}")
        if not 1 <= self.max_depth <= 16:
            raise ConfigError(f"tee_train.max_depth must be in 1..16, got {self.max_depth}")
        if not 2 <= self.max_bin <= 1024:
            raise ConfigError(f"tee_train.max_bin must be in 2..1024, got {self.max_bin}")

    def booster_params(self) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "max_bin": self.max_bin,
            "lambda": self.reg_lambda,
            "nthread": 1,
            "seed": 0,
        }


class _BlockIter(xgb.DataIter):
    """Feeds XGBoost the joined blocks one at a time (external memory)."""

    def __init__(self, src: BlockSource, cache_dir: str) -> None:
        self._src = src
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        super().__init__(cache_prefix=os.path.join(cache_dir, "xgb"), release_data=True)

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._it is None:
            self._it = self._src.blocks()
        try:
            x, y = next(self._it)
        except StopIteration:
            return False
        input_data(data=x, label=y)
        return True

    def reset(self) -> None:
        if self._it is not None:
            self._it.close()  # type: ignore[attr-defined]
        self._it = None


@dataclass
class XgbModel:
    """A native XGBoost booster (serialised as UBJSON)."""

    booster: xgb.Booster
    history: dict[str, list[float]] = field(default_factory=dict)
    kind: str = "xgboost"

    def predict_block(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(x), dtype=np.float64)

    def to_bytes(self) -> bytes:
        from sharelearn.core.codec import encode

        return encode({"kind": "xgboost", "ubj": bytes(self.booster.save_raw("ubj"))})

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> XgbModel:
        raw = msg.get("ubj")
        if not isinstance(raw, bytes):
            raise ConfigError("xgboost model payload missing")
        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(bytearray(raw))
        return cls(booster)


def train_xgboost(src: BlockSource, params: XgbParams) -> XgbModel:
    """Train with XGBoost's external-memory quantile DMatrix over the streamed blocks."""
    scratch = os.environ.get("SML_ENCLAVE_SCRATCH") or None
    with tempfile.TemporaryDirectory(prefix="sml-xgb-", dir=scratch) as cache:
        os.chmod(cache, 0o700)
        dmat = xgb.ExtMemQuantileDMatrix(_BlockIter(src, cache), max_bin=params.max_bin, nthread=1)
        evals: dict[str, dict[str, list[float]]] = {}
        booster = xgb.train(
            params.booster_params(),
            dmat,
            params.num_trees,
            evals=[(dmat, "train")],
            evals_result=evals,
            verbose_eval=False,
        )
        del dmat
    return XgbModel(booster, {"loss": [float(v) for v in evals.get("train", {}).get("logloss", [])]})


def baseline_scores(x: np.ndarray, y: np.ndarray, params: XgbParams) -> np.ndarray:
    """The same library on the pooled data in memory (outside any enclave)."""
    dmat = xgb.QuantileDMatrix(x, label=y, max_bin=params.max_bin, nthread=1)
    booster = xgb.train(params.booster_params(), dmat, params.num_trees)
    return np.asarray(booster.inplace_predict(x), dtype=np.float64)
