"""fedavg defaults that generalise (issue 17 item 6): convergence-based stopping and server optimisers.

Held-out splits of scikit-learn's bundled sets (standardised with the training rows' statistics);
the reference is scikit-learn's LogisticRegression trained to convergence on the pooled rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from sharelearn.algorithms.evaluation import EvaluateParams
from sharelearn.algorithms.horizontal.fedavg import FedAvgParams
from sharelearn.algorithms.horizontal.options import ServerOptions
from sharelearn.algorithms.horizontal.server_opt import Convergence, ServerOptimizer
from sharelearn.core.errors import ConfigError
from sharelearn.runtime.data import PartyData
from sharelearn.testing.steps import run_steps


def _table(x: np.ndarray, y: np.ndarray, tag: str) -> PartyData:
    ids = np.array([f"{tag}{i}" for i in range(len(y))], dtype=object)
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    return PartyData(ids, x.astype(np.float64), y.astype(np.float64), names, Path(f"{tag}.csv"))


def _split(name: str, seed: int) -> tuple[dict[str, tuple[str, PartyData]], float]:
    if name == "breast":
        data = load_breast_cancer()
        x, y = data.data, data.target
    else:  # digits 8 vs 9
        data = load_digits()
        keep = data.target >= 8
        x, y = data.data[keep], (data.target[keep] == 9).astype(int)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-12
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    pooled = LogisticRegression(max_iter=5000).fit(xtr, ytr)
    reference = float(roc_auc_score(yte, pooled.predict_proba(xte)[:, 1]))
    parts = np.array_split(np.random.default_rng(seed).permutation(len(ytr)), 3)
    parties = {"agg": ("server", _table(xte, yte, "t"))}
    parties.update({f"c{i}": ("client", _table(xtr[p], ytr[p], f"c{i}")) for i, p in enumerate(parts)})
    return parties, reference


@pytest.mark.parametrize(("name", "seed"), [("breast", 0), ("breast", 1), ("digits", 1)])
def test_default_fedavg_reaches_pooled_sklearn_within_001_auc(name: str, seed: int, tmp_path: Path) -> None:
    parties, reference = _split(name, seed)
    steps = [("fedavg", FedAvgParams()), ("evaluate", EvaluateParams(plots=False))]
    out = run_steps(parties, steps, tmp_path, timeout=120).parties["agg"].outputs
    fed = out["fedavg"]
    assert out["evaluate"]["auc"] >= reference - 0.01, (out["evaluate"]["auc"], reference)
    assert fed["converged"] is True and fed["rounds"] < FedAvgParams().max_rounds
    assert len(fed["history"]["train_loss"]) == fed["rounds"]


@pytest.mark.parametrize("kind", ["adam", "yogi"])
def test_fedadam_and_fedyogi_converge_and_explicit_rounds_run_exactly(kind: str, tmp_path: Path) -> None:
    parties, reference = _split("breast", 0)
    params = FedAvgParams(server=ServerOptions(optimizer=kind, learning_rate=0.1))
    steps = [("fedavg", params), ("evaluate", EvaluateParams(plots=False))]
    out = run_steps(parties, steps, tmp_path / "auto", timeout=120).parties["agg"].outputs
    assert out["evaluate"]["auc"] >= reference - 0.01 and out["fedavg"]["converged"] is True
    fixed = FedAvgParams(rounds=7, server=ServerOptions(optimizer=kind, learning_rate=0.1))
    run = run_steps(parties, [("fedavg", fixed)], tmp_path / "fixed", timeout=120)
    assert run.parties["agg"].outputs["fedavg"]["rounds"] == 7
    assert run.parties["c0"].outputs["fedavg"]["rounds_joined"] == 7


def test_server_optimiser_steps_follow_reddi_et_al() -> None:
    delta = np.array([0.5, -0.2])
    w = np.zeros(2)
    assert np.allclose(ServerOptimizer("sgd", 0.5).step(w, delta), 0.25 * np.array([1.0, -0.4]))
    adam = ServerOptimizer("adam", 1.0, 0.9, 0.99, 1e-3)
    m = 0.1 * delta
    v = 0.99 * 1e-6 + 0.01 * delta**2
    assert np.allclose(adam.step(w, delta), m / (np.sqrt(v) + 1e-3))
    yogi = ServerOptimizer("yogi", 1.0, 0.9, 0.99, 1e-3)
    v_yogi = 1e-6 - 0.01 * delta**2 * np.sign(1e-6 - delta**2)
    assert np.allclose(yogi.step(w, delta), m / (np.sqrt(v_yogi) + 1e-3))
    with pytest.raises(ConfigError, match="server.optimizer"):
        FedAvgParams(server=ServerOptions(optimizer="lamb"))  # type: ignore[arg-type]
    stop = Convergence(patience=2, tolerance=0.01)
    assert [stop.done(x) for x in (1.0, 0.5, 0.3, 0.299, 0.2985)] == [False, False, False, False, True]
