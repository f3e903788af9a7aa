"""hetero_lr's defaults on data nobody tuned them for: within 0.01 AUC of the pooled scikit-learn model.

The reference is what a user gets from scikit-learn on the pooled training rows (standardised,
LogisticRegression to convergence), scored on held-out rows. Data: splits of scikit-learn's bundled
breast_cancer set and of generated make_classification sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams, fit_plain
from sharelearn.core.errors import DataError, PartyFailed
from sharelearn.operators.psi import PsiParams
from sharelearn.testing.steps import dataset, run_steps

pytestmark = pytest.mark.timeout(600)

AUC_TOL = 0.01  # issue 17.6: the converged pooled model, within 0.01 AUC on unseen rows


def _sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x_b, y_b = load_breast_cancer(return_X_y=True)
    x_m, y_m = make_classification(n_samples=600, n_features=20, n_informative=8, random_state=3)
    x_h, y_h = make_classification(
        n_samples=600, n_features=30, n_informative=5, flip_y=0.1, class_sep=0.6, random_state=4
    )
    return {"breast_cancer": (x_b, y_b), "generated": (x_m, y_m), "generated_noisy": (x_h, y_h)}


def _pooled_auc(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> float:
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_tr, y_tr)
    return float(roc_auc_score(y_te, ref.predict_proba(x_te)[:, 1]))


@pytest.mark.parametrize("name", ["breast_cancer", "generated", "generated_noisy"])
@pytest.mark.parametrize("split", [0, 1])
def test_default_training_reaches_the_pooled_model_on_held_out_rows(name: str, split: int) -> None:
    x, y = _sets()[name]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y.astype(float), test_size=0.3, random_state=split, stratify=y
    )
    k = x.shape[1] // 3  # guest one third, host the rest

    ws, losses = fit_plain([x_tr[:, :k], x_tr[:, k:]], y_tr, HeteroLrParams(seed=split), seed=split)

    z = x_te[:, :k] @ ws[0][:-1] + ws[0][-1] + x_te[:, k:] @ ws[1]
    auc, ref = float(roc_auc_score(y_te, z)), _pooled_auc(x_tr, y_tr, x_te, y_te)
    assert auc >= ref - AUC_TOL, f"{name}: AUC {auc:.4f} vs pooled {ref:.4f} after {len(losses)} epochs"
    assert len(losses) < HeteroLrParams().epochs  # stopped by the convergence test, not the cap


def test_unscaled_features_never_diverge_silently() -> None:
    x, y = make_classification(n_samples=300, n_features=10, random_state=5)
    x = x * np.array([1000.0] * 3 + [0.01] * 3 + [1.0] * 4) + 50.0  # wildly different column scales
    blocks = [x[:, :4], x[:, 4:]]

    ws, losses = fit_plain(blocks, y.astype(float), HeteroLrParams(seed=0), seed=0)  # scaled by default
    assert all(np.isfinite(w).all() for w in ws) and np.isfinite(losses).all()

    with pytest.raises(DataError, match=r"diverged at epoch \d+ .*scale: true"):
        fit_plain(blocks, y.astype(float), HeteroLrParams(seed=0, scale=False), seed=0)


@pytest.mark.parametrize(("mode", "scheme"), [("arbiter", "ou"), ("two_party", "paillier")])
def test_default_job_scores_held_out_rows_like_the_pooled_model(
    tmp_path: Path, mode: str, scheme: str
) -> None:
    x, y = make_classification(n_samples=300, n_features=9, n_informative=5, random_state=7)
    x = x * np.linspace(1.0, 200.0, 9) + 10.0  # unscaled columns: the default scaling must cope
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(float), test_size=0.3, random_state=0, stratify=y)
    ids = [f"r{i}" for i in range(len(y_tr))]
    parties: dict[str, tuple[str, Any]] = {
        "bank": ("guest", dataset(ids, x_tr[:, :3], y_tr)),
        "shop": ("host", dataset(ids, x_tr[:, 3:])),
    }
    if mode == "arbiter":
        parties["coord"] = ("arbiter", None)
    params = HeteroLrParams(mode=mode, he_scheme=scheme, key_bits=1024, seed=1)

    run = run_steps(parties, [("psi", PsiParams()), ("hetero_lr", params)], tmp_path)

    g, h = run.parties["bank"].model, run.parties["shop"].model
    z = x_te[:, :3] @ g.weights + g.intercept + x_te[:, 3:] @ h.weights + h.intercept  # type: ignore[union-attr]
    auc, ref = float(roc_auc_score(y_te, z)), _pooled_auc(x_tr, y_tr, x_te, y_te)
    assert auc >= ref - AUC_TOL, f"{mode}: AUC {auc:.4f} vs pooled {ref:.4f}"
    assert run.parties["bank"].outputs["hetero_lr"]["converged"]


def test_a_diverging_job_stops_with_a_data_error_naming_the_cause(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=120, n_features=6, random_state=2)
    x = x * 500.0
    ids = [f"r{i}" for i in range(len(y))]
    parties = {
        "bank": ("guest", dataset(ids, x[:, :2], y.astype(float))),
        "shop": ("host", dataset(ids, x[:, 2:])),
    }
    params = HeteroLrParams(mode="two_party", he_scheme="ou", key_bits=1024, seed=1, scale=False, epochs=30)

    with pytest.raises(PartyFailed, match="diverged at epoch"):
        run_steps(parties, [("psi", PsiParams()), ("hetero_lr", params)], tmp_path)
