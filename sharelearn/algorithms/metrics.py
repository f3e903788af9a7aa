"""Metrics of every task and the pooled (centralised) view of vertical data.

Pure functions of labels and scores; no step, no registry. `evaluate` reports them, training steps'
baselines compute them on the pooled data, and the federated-vs-centralised rows compare the two.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn import metrics as skm

from sharelearn.algorithms.context import BaselineData
from sharelearn.core.errors import ConfigError

__all__ = [
    "TASKS",
    "binary_metrics",
    "metrics_for",
    "multiclass_metrics",
    "pool_vertical",
    "regression_metrics",
    "roc_points",
]

TASKS = ("binary", "multiclass", "regression")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, KS, accuracy, precision, recall, F1 and log-loss of scores `p` = P(y=1)."""
    y = np.asarray(y).astype(np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    labels = (p >= threshold).astype(np.int64)
    out: dict[str, float] = {
        "accuracy": float(skm.accuracy_score(y, labels)),
        "precision": float(skm.precision_score(y, labels, zero_division=0)),
        "recall": float(skm.recall_score(y, labels, zero_division=0)),
        "f1": float(skm.f1_score(y, labels, zero_division=0)),
        "logloss": float(skm.log_loss(y, p, labels=[0, 1])),
    }
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = skm.roc_curve(y, p)
        out["auc"] = float(skm.roc_auc_score(y, p))
        out["ks"] = float(np.max(tpr - fpr))
    return out


def roc_points(y: np.ndarray, p: np.ndarray, points: int = 51) -> dict[str, list[float]]:
    """The ROC and KS curves at a fixed grid of thresholds (0, 1/(points-1), ..., 1).

    A fixed grid, not the scores' own cut points, so the curve reveals no individual score: only
    the fraction of positives and of negatives at or above each grid threshold (the label holder's
    own aggregate, as AUC and KS are).
    """
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    grid = np.linspace(1.0, 0.0, points)
    pos, neg = max(1, int(np.sum(y == 1))), max(1, int(np.sum(y == 0)))
    tpr = [float(np.sum((p >= t) & (y == 1)) / pos) for t in grid]
    fpr = [float(np.sum((p >= t) & (y == 0)) / neg) for t in grid]
    return {
        "threshold": [round(float(t), 4) for t in grid],
        "tpr": [round(v, 4) for v in tpr],
        "fpr": [round(v, 4) for v in fpr],
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1 and log-loss of class probabilities `proba` (n, k)."""
    y = np.asarray(y).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    pred = np.argmax(proba, axis=1)
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1_macro": float(skm.f1_score(y, pred, average="macro", zero_division=0)),
        "logloss": float(skm.log_loss(y, np.clip(proba, 1e-12, 1.0), labels=list(range(proba.shape[1])))),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R^2."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    return {
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "mae": float(np.mean(np.abs(y - pred))),
        "r2": float(skm.r2_score(y, pred)),
    }


def metrics_for(task: str, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The metrics of `task` ("binary", "multiclass" or "regression")."""
    if task == "binary":
        return binary_metrics(y, scores)
    if task == "multiclass":
        return multiclass_metrics(y, scores)
    if task == "regression":
        return regression_metrics(y, scores)
    raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def pool_vertical(datasets: Mapping[str, BaselineData]) -> tuple[np.ndarray, np.ndarray]:
    """Join feature-split tables on their common ids (job order of parties); the label holder gives y.

    Rows come out sorted by id, so a baseline sees the same rows as a federated run after PSI.
    """
    tables = [d for _, d in datasets.values()]
    if not tables:
        raise ConfigError("no party has data to pool")
    common = tables[0].ids
    for t in tables[1:]:
        common = np.intersect1d(common, t.ids)
    common = np.sort(common)
    blocks, y = [], None
    for t in tables:
        order = np.argsort(t.ids, kind="stable")
        pos = order[np.searchsorted(t.ids[order], common)]
        blocks.append(np.asarray(t.x, dtype=np.float64)[pos])
        if t.y is not None and y is None:
            y = np.asarray(t.y)[pos]
    if y is None:
        raise ConfigError("no party has a label column to pool")
    return np.hstack(blocks), y
