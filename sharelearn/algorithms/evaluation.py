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

from sharelearn.algorithms.context import Dataset, StepContext, StepDef, TrainedModel
from sharelearn.algorithms.metrics import binary_metrics, metrics_for
from sharelearn.algorithms.modelstore import resolve_model_path
from sharelearn.core.errors import ConfigError, DataError
from sharelearn.core.fileio import atomic_write, atomic_write_text

__all__ = [
    "EVALUATE_STEP",
    "PREDICT_STEP",
    "EvaluateParams",
    "PredictParams",
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
    """

    plots: bool = True
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"evaluate.threshold must be in (0, 1), got {self.threshold}")


def run_evaluate(ctx: StepContext, params: EvaluateParams) -> dict[str, Any]:
    """Predict on this party's rows collaboratively; the label holder returns the metrics."""
    model = _model(ctx, "evaluate")
    ctx.progress(f"predicting with the {model.step} model", {})
    scores = model.predict(ctx, ctx.data)
    if scores is None:
        return {}
    if ctx.data is None or ctx.data.y is None:
        raise DataError(f"party {ctx.party!r} received predictions but holds no label column to evaluate")
    y = np.asarray(ctx.data.y)
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
    if params.plots:
        if model.task == "binary" and "auc" in out:
            _plot_roc(ctx.workdir / "roc.png", y, scores, out["auc"])
        if any(len(v) for v in model.history.values()):
            _plot_history(ctx.workdir / "loss_curve.png", model.history, model.step)
    if model.history:
        out["history"] = {k: [round(float(x), 6) for x in v] for k, v in model.history.items()}
    headline = ", ".join(f"{k} {out[k]}" for k in ("auc", "accuracy", "rmse") if k in out)
    ctx.progress(f"evaluated: {headline}", {})
    return out


@dataclass(frozen=True, slots=True)
class PredictParams:
    """Parameters of `predict`.

    Attributes:
        model: path of this party's model file, `{party}` replaced by the party's name; relative to
            the job file's folder. Empty: use the model trained earlier in the same job.
        step: the training step that wrote the model files (e.g. hetero_lr, secureboost).
    """

    model: str = ""
    step: str = ""

    def __post_init__(self) -> None:
        if self.model and not self.step:
            raise ConfigError("predict.step must name the training step that wrote predict.model")


def run_predict(ctx: StepContext, params: PredictParams) -> dict[str, Any]:
    """Collaborative prediction; the label-holding side writes predictions.csv (id, score...)."""
    if params.model:
        definition = ctx.catalog.get(params.step)
        if definition is None:
            raise ConfigError(f"predict.step: unknown step {params.step!r}; known: {', '.join(ctx.catalog)}")
        if definition.load is None:
            raise ConfigError(f"step {params.step!r} does not save models")
        path = resolve_model_path(params.model, party=ctx.party, job_dir=ctx.job_dir)
        ctx.model = definition.load(path)
        ctx.progress(f"loaded {path}", {})
    model = _model(ctx, "predict")
    scores = model.predict(ctx, ctx.data)
    if scores is None or ctx.data is None:
        return {}
    _write_predictions(ctx.workdir / "predictions.csv", ctx.data, np.asarray(scores), model.task)
    return {"predicted_rows": len(ctx.data), "predictions": str(ctx.workdir / "predictions.csv")}


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
)
PREDICT_STEP = StepDef(
    "predict", PredictParams, run_predict, "collaborative prediction with a trained or saved model"
)
