"""SecureBoost's parameters and what its guest and host roles share (checkpoints, timings, masks)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.modelstore import load_model
from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, DecodeError
from sharelearn.crypto import he
from sharelearn.operators import he_histogram as hh

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_STEP",
    "SecureBoostParams",
    "Timing",
    "load_checkpoint",
    "unpack_mask",
]

CHECKPOINT_FILE = "secureboost_checkpoint.msgpack"
CHECKPOINT_STEP = "secureboost-checkpoint"
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SecureBoostParams:
    """Parameters of `secureboost` (XGBoost's names where they exist).

    Attributes:
        num_trees: boosting rounds (multiclass: one tree per class per round).
        max_depth: depth of every tree.
        max_bins: quantile bins per feature.
        learning_rate: shrinkage of every leaf weight (XGBoost's eta).
        objective: binary (logistic), regression (squared error) or multiclass (softmax).
        reg_lambda: L2 regularisation of leaf weights (XGBoost's lambda; job files may write `lambda`).
        gamma: minimum loss reduction of a split (XGBoost's gamma / min_split_loss).
        min_child_weight: minimum hessian sum of a child.
        subsample: fraction of training rows sampled per round.
        validation_fraction: rows held out (at the guest) for early stopping; 0 disables it.
        early_stopping_rounds: stop after this many rounds without a better validation loss.
        he_scheme: paillier or ou (Okamoto–Uchiyama, faster).
        key_bits: modulus size of the guest's key.
        frac_bits: fixed-point precision of the scaled gradients (2^-frac_bits).
        seed: seed of the row sampling and validation split (deterministic resume).
        resume: continue from the checkpoint in the party's workdir.
    """

    num_trees: int = 30
    max_depth: int = 3
    max_bins: int = 32
    learning_rate: float = 0.3
    objective: Literal["binary", "regression", "multiclass"] = "binary"
    reg_lambda: float = field(default=1.0, metadata={"alias": "lambda"})
    gamma: float = 0.0
    min_child_weight: float = 1.0
    subsample: float = 1.0
    validation_fraction: float = 0.0
    early_stopping_rounds: int = 0
    he_scheme: Literal["paillier", "ou"] = "ou"
    key_bits: int = he.DEFAULT_KEY_BITS
    frac_bits: int = hh.DEFAULT_FRAC_BITS
    seed: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.num_trees <= 10_000, "num_trees must be in 1..10000"),
            (1 <= self.max_depth <= 16, "max_depth must be in 1..16"),
            (2 <= self.max_bins <= 1024, "max_bins must be in 2..1024"),
            (0.0 < self.learning_rate <= 1.0, "learning_rate must be in (0, 1]"),
            (
                self.objective in ("binary", "regression", "multiclass"),
                "objective must be binary, regression or multiclass",
            ),
            (self.reg_lambda >= 0.0, "reg_lambda must be >= 0"),
            (self.gamma >= 0.0, "gamma must be >= 0"),
            (self.min_child_weight >= 0.0, "min_child_weight must be >= 0"),
            (0.0 < self.subsample <= 1.0, "subsample must be in (0, 1]"),
            (0.0 <= self.validation_fraction < 0.5, "validation_fraction must be in [0, 0.5)"),
            (self.early_stopping_rounds >= 0, "early_stopping_rounds must be >= 0"),
            (self.he_scheme in he.SCHEMES, f"he_scheme must be one of {he.SCHEMES}"),
            (1024 <= self.key_bits <= 4096, "key_bits must be in 1024..4096"),
            (8 <= self.frac_bits <= 52, "frac_bits must be in 8..52"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"secureboost.{message}")
        if self.early_stopping_rounds and not self.validation_fraction:
            raise ConfigError("secureboost.early_stopping_rounds needs a validation_fraction > 0")

    def fingerprint(self, ids: np.ndarray) -> str:
        """Identify a training run (parameters and the set of row ids, not the resume setting)."""
        fields = {k: v for k, v in asdict(self).items() if k != "resume"}
        digest = hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()
        raw = json.dumps({"params": fields, "ids": digest}, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:32]


@dataclass
class Timing:
    encrypt_s: float = 0.0
    decrypt_s: float = 0.0
    split_s: float = 0.0
    wait_s: float = 0.0
    histogram_s: float = 0.0

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def unpack_mask(bits: Any, rows: int, *, peer: str, tag: str) -> npt.NDArray[np.bool_]:
    raw = codec.expect_type(bits, bytes, peer=peer, tag=tag)
    if len(raw) != (rows + 7) // 8:
        raise DecodeError(f"{tag} from {peer!r}: {len(raw)} bytes for {rows} rows", peer=peer, tag=tag)
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=rows).astype(bool)


def load_checkpoint(path: Path, fingerprint: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A run's checkpoint (meta, arrays) if `path` holds one, None if there is none yet.

    Raises:
        ConfigError: naming the file, if the checkpoint belongs to another run (fingerprint).
    """
    if not path.is_file():
        return None
    meta, arrays = load_model(path, CHECKPOINT_STEP)
    if meta.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{path}: the checkpoint belongs to a different secureboost run (parameters or data changed)"
        )
    return meta, arrays
