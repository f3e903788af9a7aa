"""Online scoring of vertical models from their packages: the hosts' partial results, the guest's score.

Pure functions over arrays, built from each party's `ModelPackage` (never from a training run), so
that a serving process scores exactly as the batch `predict` of the same model does:

- hetero_lr: a host's partial result for a row is u_h = x_h . w_h encoded in Z_2^64 with the same
  fixed point (`FixedPoint(24)`) as the batch predict; the guest sums the hosts' results in Z_2^64,
  decodes, adds u_g + b and applies the sigmoid.
- secureboost: a host's partial result for a row is one bit per entry of its own lookup table
  (does the row go left at that split), packed; the guest routes the row through its trees.

What each side learns: the host learns which ids the guest asks for, and when; nothing of the
guest's features or scores. The guest learns, per row and host, u_h (hetero_lr; in the batch
predict with several hosts a pairwise mask hides each u_h and shows only their sum — here each
host's u_h is seen, one more scalar per host per row) or the direction of every split of the
host's lookup table (secureboost: the same bits the batch predict sends), never a host feature or
threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.package import ModelPackage
from sharelearn.algorithms.vertical.secureboost_model import (
    FlatForest,
    SecureBoostGuestModel,
    SecureBoostHostModel,
    flatten_trees,
    load_secureboost,
)
from sharelearn.core.errors import DataError, ProtocolError
from sharelearn.crypto.fixedpoint import FixedPoint

__all__ = [
    "LR_FIXED_POINT",
    "SERVABLE_STEPS",
    "GuestScorer",
    "HostScorer",
    "guest_scorer",
    "host_scorer",
    "link_scores",
]

SERVABLE_STEPS = ("hetero_lr", "secureboost")
LR_FIXED_POINT = FixedPoint(24)  # the encoding of hetero_lr's batch predict (hetero_lr._PREDICT_FP)


def _where(package: ModelPackage) -> str:
    ident = package.identity
    return f"model {ident.model_id} v{ident.version} ({ident.step}, party {ident.party!r})"


def _check_servable(package: ModelPackage, role: str) -> None:
    where = _where(package)
    if package.identity.step not in SERVABLE_STEPS:
        raise DataError(f"{where}: step {package.identity.step!r} cannot be served (only {SERVABLE_STEPS})")
    if package.identity.role != role:
        raise DataError(
            f"{where}: is the {package.identity.role!r} part, this process serves the {role!r} part"
        )
    if package.preprocessing:
        # Scoring raw rows with a model trained on transformed ones would be a silent wrong answer.
        raise DataError(f"{where}: packages with preprocessing steps cannot be served yet")
    if package.schema is None:
        raise DataError(f"{where}: the package has no feature schema")


@dataclass(frozen=True, slots=True)
class HostScorer:
    """A host's part: computes the per-row partial results the guest needs, from the host's features."""

    package: ModelPackage
    weights: npt.NDArray[np.float64] | None = None  # hetero_lr
    intercept: float = 0.0  # hetero_lr: the host's constant from its local scaling
    feature: npt.NDArray[np.int64] | None = None  # secureboost lookup table
    threshold: npt.NDArray[np.float64] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        assert self.package.schema is not None  # invariant: _check_servable
        return self.package.schema.names

    def partial(self, x: npt.NDArray[np.float64]) -> np.ndarray:
        """Per-row partial results for rows `x` (columns in the schema's order).

        hetero_lr: uint64 (n,), u_h in fixed point. secureboost: uint8 (n, ceil(entries / 8)), bit e
        of row i set when row i goes left at lookup-table entry e.
        """
        if self.weights is not None:
            return LR_FIXED_POINT.encode(x @ self.weights + self.intercept)
        assert self.feature is not None and self.threshold is not None
        left = x[:, self.feature] <= self.threshold[None, :]
        return np.packbits(left, axis=1)


def host_scorer(package: ModelPackage) -> HostScorer:
    """The host part of a hetero_lr or secureboost package, ready to serve."""
    _check_servable(package, "host")
    assert package.schema is not None
    width = len(package.schema.names)
    if package.identity.step == "hetero_lr":
        w = np.asarray(package.arrays.get("weights"), dtype=np.float64)
        if w.ndim != 1 or w.size != width:
            raise DataError(f"{_where(package)}: weights do not match the {width} schema columns")
        return HostScorer(package, weights=w, intercept=float(package.meta.get("intercept", 0.0)))
    part = load_secureboost(package)
    if not isinstance(part, SecureBoostHostModel):
        raise DataError(f"{_where(package)}: not a secureboost host part")
    if part.feature.size and (part.feature.min() < 0 or part.feature.max() >= width):
        raise DataError(f"{_where(package)}: lookup table names a feature outside the schema")
    return HostScorer(package, feature=part.feature, threshold=part.threshold)


@dataclass(frozen=True, slots=True)
class GuestScorer:
    """The guest's part: combines its own features with the hosts' partial results into scores."""

    package: ModelPackage
    hosts: tuple[str, ...]
    weights: npt.NDArray[np.float64] | None = None
    intercept: float = 0.0
    trees: SecureBoostGuestModel | None = None
    forest: FlatForest | None = None  # the same trees as flat arrays: all walked at once
    base: npt.NDArray[np.float64] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        assert self.package.schema is not None
        return self.package.schema.names

    @property
    def task(self) -> str:
        return self.package.task

    def score(self, x: npt.NDArray[np.float64], partials: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of rows `x` given each host's partial results (in `hosts` order), as batch predict."""
        n = x.shape[0]
        if len(partials) != len(self.hosts):
            raise ProtocolError(f"{len(partials)} partial results for hosts {list(self.hosts)}")
        if self.weights is not None:
            total = np.zeros(n, dtype=np.uint64)
            for p in partials:
                total = total + np.asarray(p, dtype=np.uint64)
            z = x @ self.weights + self.intercept + LR_FIXED_POINT.decode(total)
            return np.asarray(1.0 / (1.0 + np.exp(-z)))
        assert self.forest is not None and self.base is not None
        bits = [np.unpackbits(np.asarray(p, dtype=np.uint8), axis=1).astype(bool) for p in partials]
        return link_scores(self.task, self.forest.margins(x, self.base, bits))


def link_scores(task: str, margin: npt.NDArray[np.float64]) -> np.ndarray:
    """Raw margins (n, k) to scores, as secureboost's batch predict does."""
    if task == "binary":
        return np.asarray(1.0 / (1.0 + np.exp(-margin[:, 0])))
    if task == "regression":
        return np.asarray(margin[:, 0])
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def guest_scorer(package: ModelPackage) -> GuestScorer:
    """The guest part of a hetero_lr or secureboost package, ready to serve."""
    _check_servable(package, "guest")
    assert package.schema is not None
    if package.identity.step == "hetero_lr":
        w = np.asarray(package.arrays.get("weights"), dtype=np.float64)
        if w.ndim != 1 or w.size != len(package.schema.names):
            raise DataError(f"{_where(package)}: weights do not match the schema")
        hosts = tuple(p for p, r in package.identity.parties if r == "host")
        return GuestScorer(package, hosts, weights=w, intercept=float(package.meta.get("intercept", 0.0)))
    part = load_secureboost(package)
    if not isinstance(part, SecureBoostGuestModel):
        raise DataError(f"{_where(package)}: not a secureboost guest part")
    base = np.asarray(part.base, dtype=np.float64)
    forest = flatten_trees(part.trees, base.size)
    return GuestScorer(package, tuple(part.hosts), trees=part, forest=forest, base=base)
