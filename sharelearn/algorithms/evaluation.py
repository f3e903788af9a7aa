"""The `evaluate` and `predict` steps (metrics: `algorithms.metrics`).

Both drive the `TrainedModel` a training step left in `ctx.model` (or, for `predict`, one
loaded from each party's own model file): every party runs its role of prediction; only the party
that receives the scores (the label holder) computes metrics or writes predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from sharelearn.algorithms.alignment import run_psi
from sharelearn.algorithms.context import Dataset, StepContext, StepDef, TrainedModel
from sharelearn.algorithms.metrics import binary_metrics, metrics_for, roc_points
from sharelearn.algorithms.modelstore import resolve_model_path
from sharelearn.algorithms.package import ModelPackage, check_same_model, load_package
from sharelearn.algorithms.preprocess import apply_preprocessing, require_complete
from sharelearn.core.errors import ConfigError, DataError
from sharelearn.core.fileio import atomic_write, atomic_write_text
from sharelearn.operators.psi import PsiParams

__all__ = [
    "EVALUATE_STEP",
    "PREDICT_STEP",
    "EvaluateParams",
    "PredictParams",
    "ensure_aligned",
    "load_party_model",
    "run_evaluate",
    "run_predict",
]


def _plot_roc(path: Path, y: np.ndarray, p: np.ndarray, auc: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = skm.roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"federated (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def _plot_history(path: Path, history: Mapping[str, Sequence[float]], step: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in history.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch" if step.endswith("lr") else "iteration")
    ax.set_title(f"{step} training curve")
    ax.legend()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def _model(ctx: StepContext, step: str) -> TrainedModel:
    if ctx.model is None:
        raise ConfigError(f"`{step}` needs a model: list a training step (or `predict`) before it")
    return ctx.model


@dataclass(frozen=True, slots=True)
class EvaluateParams:
    """Parameters of `evaluate`.

    Attributes:
        plots: write roc.png (binary) and the training curve (loss_curve.png) at the label holder.
        threshold: the score above which a binary prediction is positive.
        seed: the common order of the `psi` this step runs when no earlier step aligned the rows
            (the job's `seed:` unless set).
    """

    plots: bool = True
    threshold: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"evaluate.threshold must be in (0, 1), got {self.threshold}")


def run_evaluate(ctx: StepContext, params: EvaluateParams) -> dict[str, Any]:
    """Predict on this party's rows collaboratively; the label holder returns the metrics."""
    model = _model(ctx, "evaluate")
    _require_complete(ctx, model, "evaluate")
    ensure_aligned(ctx, model, "evaluate", params.seed)
    held_out = len(ctx.splits.get("test", ())) > 0
    data = ctx.splits["test"] if held_out else ctx.data
    ctx.progress(
        f"predicting with the {model.step} model on the {'test' if held_out else 'training'} rows", {}
    )
    scores = model.predict(ctx, data)
    if scores is None:
        return {}
    if data is None or data.y is None:
        raise DataError(f"party {ctx.party!r} received predictions but holds no label column to evaluate")
    y = np.asarray(data.y)
    if model.task == "binary":
        out: dict[str, Any] = binary_metrics(y, scores, params.threshold)
    else:
        out = metrics_for(model.task, y, scores)
    out = {k: round(v, 6) for k, v in out.items()}
    # A differentially private model states its privacy budget next to its accuracy.
    epsilon = getattr(model, "dp_epsilon", None)
    if isinstance(epsilon, int | float):
        out["dp_epsilon"] = round(float(epsilon), 6)
    out["task"] = model.task
    out["rows"] = len(y)
    out["evaluated_on"] = "test" if held_out else "train"
    if params.plots:
        if model.task == "binary" and "auc" in out:
            _plot_roc(ctx.workdir / "roc.png", y, scores, out["auc"])
        if any(len(v) for v in model.history.values()):
            _plot_history(ctx.workdir / "loss_curve.png", model.history, model.step)
    if model.task == "binary" and "auc" in out:  # the dashboard's ROC and KS plots
        out["roc"] = roc_points(y, scores)
    if model.history:
        out["history"] = {k: [round(float(x), 6) for x in v] for k, v in model.history.items()}
    headline = ", ".join(f"{k} {out[k]}" for k in ("auc", "accuracy", "rmse") if k in out)
    ctx.progress(f"evaluated: {headline}", {})
    return out


@dataclass(frozen=True, slots=True)
class PredictParams:
    """Parameters of `predict`.

    Attributes:
        model: path of this party's model package, `{party}` replaced by the party's name; relative
            to the job file's folder. Empty: use the model trained earlier in the same job.
        step: optionally, the training step the package must come from (e.g. hetero_lr); the package
            itself records its step.
        seed: the common order of the `psi` this step runs when no earlier step aligned the rows
            (the job's `seed:` unless set).
    """

    model: str = ""
    step: str = ""
    seed: int = 0


def load_party_model(ctx: StepContext, template: str, step: str = "") -> ModelPackage:
    """Load this party's part of a saved model and make it the context's model.

    Checks, before any row is scored: the package is intact and is this party's part (of `step`,
    when given); every party loaded a part of the same model and version; this party's columns
    match the model's feature schema by name (reordered when they come in another order).
    """
    path = resolve_model_path(template, party=ctx.party, job_dir=ctx.job_dir)
    package = load_package(path, party=ctx.party, step=step or None)
    definition = ctx.catalog.get(package.identity.step)
    if definition is None or definition.load is None:
        raise ConfigError(f"{path}: step {package.identity.step!r} has no model loader in this run")
    check_same_model(ctx, package)
    if package.preprocessing and not ctx.preprocessing:  # raw columns -> the model's columns
        if ctx.data is not None:
            ctx.data = apply_preprocessing(package, ctx.data)
        ctx.splits = {part: apply_preprocessing(package, rows) for part, rows in ctx.splits.items()}
    if ctx.data is not None and package.schema is not None:
        ctx.data = package.schema.align(ctx.data, party=ctx.party)
    ctx.model, ctx.package = definition.load(package), package
    ctx.progress(f"loaded {path} (model {package.identity.model_id} v{package.identity.version})", {})
    return package


def _require_complete(ctx: StepContext, model: TrainedModel, step: str) -> None:
    """Missing values reach the model only when its training step handles them (SecureBoost)."""
    definition = ctx.catalog.get(model.step)
    if definition is None or not definition.handles_missing:
        require_complete(ctx, f"{step} ({model.step} model)")


def ensure_aligned(ctx: StepContext, model: TrainedModel, step: str, seed: int = 0) -> None:
    """Align this party's rows with the other data parties' before a vertical model scores them.

    A vertical model pairs row i of every party; rows that `psi` did not align would pair one
    person's features with another's. Without an earlier `psi` step this runs it (default
    parameters, the common order keyed by `seed`) first; an empty intersection is a data error
    naming the step.
    """
    if not model.aligned_rows or ctx.aligned or len(ctx.data_parties) < 2 or ctx.data is None:
        return
    ctx.progress(f"{step}: rows are not aligned yet; running psi first", {})
    link = ctx.link
    ctx.link = link.scope("psi")
    try:
        run_psi(ctx, PsiParams(seed=seed))
    except DataError as exc:  # name the step the user wrote, not only the psi it ran
        raise DataError(f"{step}: {exc}") from exc
    finally:
        ctx.link = link


def run_predict(ctx: StepContext, params: PredictParams) -> dict[str, Any]:
    """Collaborative prediction; the label-holding side writes predictions.csv (id, score...)."""
    if params.model:
        load_party_model(ctx, params.model, params.step)
    elif params.step and ctx.model is not None and ctx.model.step != params.step:
        raise ConfigError(
            f"predict.step is {params.step!r} but the job's model comes from {ctx.model.step!r}"
        )
    model = _model(ctx, "predict")
    _require_complete(ctx, model, "predict")
    ensure_aligned(ctx, model, "predict", params.seed)
    data = ctx.splits.get("all", ctx.data)  # after `split`: every row, not only the train part
    scores = model.predict(ctx, data)
    if scores is None or data is None:
        return {}
    _write_predictions(ctx.workdir / "predictions.csv", data, np.asarray(scores), model.task)
    return {"predicted_rows": len(data), "predictions": str(ctx.workdir / "predictions.csv")}


def _write_predictions(path: Path, data: Dataset, scores: np.ndarray, task: str) -> None:
    if scores.ndim == 1:
        header = "id,score" if task != "regression" else "id,prediction"
        rows = (f"{i},{s:.9g}" for i, s in zip(data.ids, scores, strict=True))
    else:
        header = "id," + ",".join(f"p{k}" for k in range(scores.shape[1]))
        rows = (f"{i}," + ",".join(f"{v:.9g}" for v in r) for i, r in zip(data.ids, scores, strict=True))
    atomic_write_text(path, header + "\n" + "".join(r + "\n" for r in rows))


EVALUATE_STEP = StepDef(
    "evaluate",
    EvaluateParams,
    run_evaluate,
    "collaborative prediction; metrics at the label holder",
    handles_missing=True,  # checked against the model's step (`_require_complete`)
)
PREDICT_STEP = StepDef(
    "predict",
    PredictParams,
    run_predict,
    "collaborative prediction with a trained or saved model",
    handles_missing=True,
)
