"""Held-out evaluation: the `split` and `cross_validate` steps.

`split` divides the aligned rows into train / validation / test parts, stratified by the label, the
same rows at every party: later training steps see only the train rows (`ctx.data`), `evaluate`
scores the test rows (`ctx.splits["test"]`), and `predict` scores every row.

Vertical data (guest / host roles): the rows must be aligned (`psi` first). The label holder (the
first guest with data, else the first data party) draws the assignment and sends it to every
other data party (`split/assignment`, one uint8 per aligned row: 0 train, 1 validation, 2 test).
Horizontal data (server / client roles): each party splits its own rows; nothing is sent.

What each role learns: the hosts learn which aligned rows are in which part (they must, to train on
the train rows) and nothing about the labels beyond what the part sizes say. The per-class draw is
keyed by HMAC-SHA256(seed, fingerprint of the label holder's table), so the same job and data give
the same split every run, yet the hosts, who know the seed but not the guest's features and
labels, cannot recompute the draw and test label guesses against it (a draw keyed by the public
seed alone would tell a host which rows share a class).

`converged_reference` is the launcher's second centralised reference: the model a user would train
on the pooled data (scikit-learn's logistic regression on standardised features, or its histogram
gradient boosting for tree steps, both run to convergence), trained on the same train rows and
scored on the same rows `evaluate` scored, rebuilt from the job's seed exactly as the parties drew
them (psi's common order, then the label holder's keyed draw).

`cross_validate` runs a training step k times, each time on k-1 of k stratified folds, scores the
held-out fold, and reports each metric's mean and standard deviation over the folds. The fold
models are written under `<workdir>/cv/fold<i>/` and are not the job's model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sharelearn.algorithms.context import BaselineData, Dataset, StepContext, StepDef, TrainedModel
from sharelearn.algorithms.metrics import binary_metrics, metrics_for
from sharelearn.algorithms.package import data_fingerprint
from sharelearn.core.codec import expect_array
from sharelearn.core.errors import ConfigError, DataError, DecodeError
from sharelearn.operators.psi import common_order, hash_ids

__all__ = [
    "CROSS_VALIDATE_STEP",
    "CV_STEPS",
    "SPLIT_STEP",
    "CrossValidateParams",
    "SplitParams",
    "assign_parts",
    "converged_reference",
    "pooled_parts",
    "run_cross_validate",
    "run_split",
]

PARTS = ("train", "validation", "test")
CV_STEPS = ("hetero_lr", "secureboost", "ss_lr")
HORIZONTAL_ROLES = ("server", "client")
TREE_STEPS = ("secureboost",)
_MAX_STRATA = 64  # more distinct labels than this: a regression target, split without strata


@dataclass(frozen=True, slots=True)
class SplitParams:
    """Parameters of `split`.

    Attributes:
        train / validation / test: fractions of the rows in each part (they sum to 1).
        stratify: keep each label's share the same in every part (classification labels).
        seed: the job's `seed:` unless set; the same seed and data give the same parts.
    """

    train: float = 0.8
    validation: float = 0.0
    test: float = 0.2
    stratify: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = (self.train, self.validation, self.test)
        if not all(0.0 <= f <= 1.0 for f in fractions) or self.train <= 0.0:
            raise ConfigError(f"split: fractions must be in [0, 1] with train > 0, got {fractions}")
        if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
            raise ConfigError(f"split: train + validation + test must be 1, got {sum(fractions):g}")


def _strata(y: np.ndarray | None, stratify: bool, n: int) -> np.ndarray:
    if y is None or not stratify:
        return np.zeros(n, dtype=np.int64)
    values, inverse = np.unique(np.asarray(y), return_inverse=True)
    return inverse.astype(np.int64) if values.size <= _MAX_STRATA else np.zeros(n, dtype=np.int64)


def _keyed_rng(data: Dataset, seed: int) -> np.random.Generator:
    key = hmac.new(str(int(seed)).encode(), data_fingerprint(data).encode(), hashlib.sha256).digest()
    return np.random.default_rng(np.frombuffer(key, dtype=np.uint64))


def assign_parts(data: Dataset, counts: tuple[float, ...], *, stratify: bool, seed: int) -> np.ndarray:
    """Give each row a part 0..len(counts)-1: within every label, the fractions `counts`, keyed draw."""
    n = len(data)
    strata = _strata(data.y, stratify, n)
    rng = _keyed_rng(data, seed)
    out = np.empty(n, dtype=np.uint8)
    edges = np.cumsum(counts)
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        rows = rows[rng.permutation(rows.size)]
        cuts = np.rint(edges[:-1] * rows.size).astype(np.int64)
        for part, chunk in enumerate(np.split(rows, cuts)):
            out[chunk] = part
    return out


def _decider(ctx: StepContext) -> str:
    guests = [p for p in ctx.data_parties if ctx.roles[p] == "guest"]
    return (guests or list(ctx.data_parties))[0]


def _shared_assignment(ctx: StepContext, step: str, draw: Any, parts: int) -> np.ndarray:
    """The decider's assignment of aligned rows, sent to the other data parties (vertical data)."""
    assert ctx.data is not None  # callers return early without data
    if ctx.role in HORIZONTAL_ROLES or len(ctx.data_parties) < 2:
        return np.asarray(draw(), dtype=np.uint8)
    if not ctx.aligned:
        raise ConfigError(
            f"{step}: the rows of {list(ctx.data_parties)} are not aligned; put `psi` before it"
        )
    decider = _decider(ctx)
    if ctx.party == decider:
        assignment = np.asarray(draw(), dtype=np.uint8)
        for peer in ctx.data_parties:
            if peer != decider:
                ctx.link.send(peer, "assignment", assignment)
        return assignment
    got = expect_array(
        ctx.link.recv(decider, "assignment"),
        peer=decider,
        tag="assignment",
        dtype=np.uint8,
        shape=(len(ctx.data),),
    )
    if got.size and int(got.max()) >= parts:
        raise DecodeError(
            f"{step}: assignment from {decider!r} names a part >= {parts}", peer=decider, tag="assignment"
        )
    return got


def run_split(ctx: StepContext, params: SplitParams) -> dict[str, Any]:
    """Split this party's (aligned) rows; later steps train on the train part."""
    if ctx.data is None:
        return {}
    data = ctx.data
    fractions = (params.train, params.validation, params.test)
    assignment = _shared_assignment(
        ctx, "split", lambda: assign_parts(data, fractions, stratify=params.stratify, seed=params.seed), 3
    )
    parts = {name: data.take(np.flatnonzero(assignment == i)) for i, name in enumerate(PARTS)}
    if len(parts["train"]) == 0:
        raise DataError(
            f"split: party {ctx.party!r} has no training rows left ({len(data)} rows, {fractions})"
        )
    ctx.splits = {"all": data, **parts}
    ctx.data = parts["train"]
    sizes = {f"{name}_rows": len(part) for name, part in parts.items()}
    ctx.progress("split " + ", ".join(f"{k} {v}" for k, v in sizes.items()), sizes)
    return sizes


@dataclass(frozen=True, slots=True)
class CrossValidateParams:
    """Parameters of `cross_validate`.

    Attributes:
        step: the training step to validate (hetero_lr, secureboost or ss_lr).
        k: the number of folds.
        params: that step's parameters, as in the job file (the job loader builds and checks them
            as that step's parameters object).
        stratify: stratify the folds by the label.
        seed: the job's `seed:` unless set (the folds, and the step's seed unless `params` sets one).
    """

    step: str
    k: int = 5
    params: Any = field(default_factory=dict, metadata={"params_of": "step"})
    stratify: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.step not in CV_STEPS:
            raise ConfigError(f"cross_validate.step must be one of {', '.join(CV_STEPS)}, got {self.step!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 2 <= self.k <= 100:
            raise ConfigError(f"cross_validate.k must be an integer in 2..100, got {self.k!r}")


def _step_params(ctx: StepContext, params: CrossValidateParams) -> Any:
    definition = ctx.catalog.get(params.step)
    if definition is None:
        raise ConfigError(f"cross_validate: step {params.step!r} is not in this run's catalog")
    if not isinstance(params.params, Mapping):  # already built (and checked) by the job loader
        return definition, params.params
    given = dict(params.params)
    names = {f.name for f in dataclasses.fields(definition.params)}
    if "seed" in names and "seed" not in given:
        given["seed"] = params.seed
    try:
        return definition, definition.params(**given)
    except TypeError as exc:
        raise ConfigError(f"cross_validate.params: invalid parameters for {params.step}: {exc}") from exc


def _fold_scores(ctx: StepContext, model: TrainedModel, held: Dataset | None) -> dict[str, float] | None:
    scores = model.predict(ctx, held)
    if scores is None or held is None or held.y is None:
        return None
    y = np.asarray(held.y)
    return binary_metrics(y, scores) if model.task == "binary" else metrics_for(model.task, y, scores)


def _summarise(folds: list[dict[str, float]], k: int) -> dict[str, Any]:
    out: dict[str, Any] = {"k": k, "folds": [{m: round(v, 6) for m, v in f.items()} for f in folds]}
    for metric in folds[0]:
        values = np.asarray([f[metric] for f in folds if metric in f], dtype=np.float64)
        out[f"{metric}_mean"] = round(float(values.mean()), 6)
        out[f"{metric}_std"] = round(float(values.std(ddof=1)) if values.size > 1 else 0.0, 6)
    return out


def run_cross_validate(ctx: StepContext, params: CrossValidateParams) -> dict[str, Any]:
    """Train `params.step` on k-1 folds k times; the label holder returns per-fold and mean metrics."""
    definition, step_params = _step_params(ctx, params)
    data = ctx.data
    if data is None:
        fold_of = np.zeros(0, dtype=np.uint8)
    else:
        share = (1.0 / params.k,) * params.k
        draw = lambda: assign_parts(data, share, stratify=params.stratify, seed=params.seed)  # noqa: E731
        fold_of = _shared_assignment(ctx, "cross_validate", draw, params.k)
    link, folds = ctx.link, []
    for fold in range(params.k):
        train = None if data is None else data.take(np.flatnonzero(fold_of != fold))
        held = None if data is None else data.take(np.flatnonzero(fold_of == fold))
        fold_dir = ctx.workdir / "cv" / f"fold{fold}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        fctx = dataclasses.replace(
            ctx, link=link.scope("fold", fold), data=train, workdir=fold_dir, model=None
        )
        definition.run(fctx, step_params)
        if fctx.model is None:
            raise ConfigError(f"cross_validate: step {params.step!r} left no model in fold {fold}")
        fctx.link = link.scope("fold", fold, "score")
        scored = _fold_scores(fctx, fctx.model, held)
        if scored is not None:
            folds.append(scored)
        ctx.progress(f"fold {fold + 1}/{params.k} done", {"fold": fold + 1})
    return _summarise(folds, params.k) if folds else {"k": params.k}


def pooled_parts(
    datasets: Mapping[str, BaselineData], *, psi_seed: int, split: SplitParams | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pooled (x, y) of each part, rows in the order and parts the parties used.

    Rebuilds psi's common order (the intersection sorted by the keyed PRF of the seed) and the
    label holder's split draw on its aligned table; without `split`, "train" and "test" are both
    every common row (evaluate then scored the training rows).
    """
    tables = [(role, t) for role, t in datasets.values()]
    common = tables[0][1].ids
    for _, t in tables[1:]:
        common = np.intersect1d(common, t.ids)
    if common.size == 0:
        raise DataError("the parties' tables have no id in common")
    common = np.asarray(common, dtype=object)[common_order(hash_ids(common), psi_seed)]
    aligned = []
    for _, t in tables:
        index = {str(i): k for k, i in enumerate(t.ids)}
        aligned.append(t.take(np.asarray([index[str(i)] for i in common], dtype=np.int64)))
    holder = next((k for k, (role, _) in enumerate(tables) if role == "guest"), 0)
    label = next((a for a in aligned if a.y is not None), None)
    if label is None:
        raise ConfigError("no party has a label column to pool")
    x, y = np.hstack([np.asarray(a.x, dtype=np.float64) for a in aligned]), np.asarray(label.y)
    if split is None:
        return {"train": (x, y), "test": (x, y)}
    fractions = (split.train, split.validation, split.test)
    parts = assign_parts(aligned[holder], fractions, stratify=split.stratify, seed=split.seed)
    return {name: (x[parts == i], y[parts == i]) for i, name in enumerate(PARTS)}


def _task(y: np.ndarray) -> str:
    values = np.unique(y)
    if values.size <= 2 and set(values.tolist()) <= {0.0, 1.0}:
        return "binary"
    return "multiclass" if values.size <= _MAX_STRATA and np.all(values == np.round(values)) else "regression"


def converged_reference(
    step: str, datasets: Mapping[str, BaselineData], *, psi_seed: int, split: SplitParams | None
) -> dict[str, float]:
    """Metrics of the pooled model trained to convergence on the train rows, scored like `evaluate`."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parts = pooled_parts(datasets, psi_seed=psi_seed, split=split)
    (x, y), (x_score, y_score) = parts["train"], parts["test"]
    task, trees = _task(y), step in TREE_STEPS
    if task == "regression":
        model: Any = HistGradientBoostingRegressor(max_iter=1000, early_stopping=True, random_state=0)
        if not trees:
            model = make_pipeline(StandardScaler(), LinearRegression())
        return metrics_for(task, y_score, model.fit(x, y).predict(x_score))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000, tol=1e-8))
    if trees:
        model = HistGradientBoostingClassifier(max_iter=1000, early_stopping=True, random_state=0)
    proba = model.fit(x, y).predict_proba(x_score)
    return metrics_for(task, y_score, proba[:, 1] if task == "binary" else proba)


SPLIT_STEP = StepDef(
    "split",
    SplitParams,
    run_split,
    "stratified train/validation/test split of the aligned rows",
    handles_missing=True,  # rows only
)
CROSS_VALIDATE_STEP = StepDef(
    "cross_validate", CrossValidateParams, run_cross_validate, "k-fold cross-validation of a training step"
)
