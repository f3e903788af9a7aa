"""Held-out evaluation: `split` (stratified, the same rows at every party) and `cross_validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score

from sharelearn.algorithms.evaluation import EvaluateParams, PredictParams
from sharelearn.algorithms.mpc.ss_lr import SSLRParams
from sharelearn.algorithms.registry import step_params
from sharelearn.algorithms.split import (
    CrossValidateParams,
    SplitParams,
    assign_parts,
    converged_reference,
    pooled_parts,
)
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams
from sharelearn.algorithms.vertical.secureboost_params import SecureBoostParams
from sharelearn.core.errors import ConfigError, PartyFailed
from sharelearn.operators.psi import PsiParams
from sharelearn.runtime.data import PartyData
from sharelearn.runtime.jobspec import parse_job
from sharelearn.testing.steps import dataset, run_steps

pytestmark = pytest.mark.timeout(300)


def _vertical(extra: dict[str, str] | None = None) -> dict[str, tuple[str, PartyData | None]]:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    rng = np.random.default_rng(3)
    ids = [f"p{i:04d}" for i in range(len(y))]
    shop = rng.permutation(len(y))[:540]
    parties: dict[str, tuple[str, PartyData | None]] = {
        "bank": ("guest", dataset(ids, x[:, :10], y, "bank.csv")),
        "shop": ("host", dataset([ids[i] for i in shop], x[shop, 10:], None, "shop.csv")),
    }
    return parties | {name: (role, None) for name, role in (extra or {}).items()}


def test_split_gives_every_party_the_same_stratified_parts(tmp_path: Path) -> None:
    parties = _vertical()
    split = SplitParams(train=0.6, validation=0.1, test=0.3, seed=4)

    run = run_steps(parties, [("psi", PsiParams(seed=4)), ("split", split)], tmp_path)

    bank, shop = (run.parties[p].context for p in ("bank", "shop"))
    for part in ("train", "validation", "test"):
        assert list(bank.splits[part].ids) == list(shop.splits[part].ids)
    assert list(bank.data.ids) == list(bank.splits["train"].ids)  # type: ignore[union-attr]
    assert run.parties["bank"].outputs["split"] == {
        "train_rows": 324,
        "validation_rows": 54,
        "test_rows": 162,
    }
    y_all, y_test = bank.splits["all"].y, bank.splits["test"].y
    assert y_all is not None and y_test is not None
    assert abs(float(y_test.mean()) - float(y_all.mean())) < 0.01  # stratified


def test_split_is_reproducible_and_the_seed_changes_it(tmp_path: Path) -> None:
    data = _vertical()["bank"][1]
    assert data is not None

    a = assign_parts(data, (0.8, 0.0, 0.2), stratify=True, seed=1)
    b = assign_parts(data, (0.8, 0.0, 0.2), stratify=True, seed=1)
    c = assign_parts(data, (0.8, 0.0, 0.2), stratify=True, seed=2)

    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and (a == 2).sum() == (c == 2).sum()


def test_a_host_cannot_infer_labels_from_the_split_it_receives(tmp_path: Path) -> None:
    # The host's view: the assignment (which rows are test) and the public seed. Attack 1: rows in
    # the test part as a label predictor. Attack 2: recompute a draw keyed by the public seed alone
    # on a table the host can build (ids only) and look for rows that share a class.
    parties = _vertical()
    run = run_steps(parties, [("psi", PsiParams(seed=9)), ("split", SplitParams(seed=9))], tmp_path)
    bank, shop = run.parties["bank"].context, run.parties["shop"].context
    y = np.asarray(bank.splits["all"].y)
    in_test = np.isin(shop.splits["all"].ids, shop.splits["test"].ids).astype(float)

    attack_auc = roc_auc_score(y, in_test)
    guess_table = dataset(list(shop.splits["all"].ids), np.zeros((len(y), 1)), np.zeros(len(y)))
    guess = assign_parts(guess_table, (0.8, 0.0, 0.2), stratify=True, seed=9) == 2

    assert abs(attack_auc - 0.5) < 0.05
    assert abs(roc_auc_score(y, guess.astype(float)) - 0.5) < 0.1
    assert (guess == in_test.astype(bool)).mean() < 0.8  # chance agreement is 0.68


def test_evaluate_after_split_scores_only_the_test_rows(tmp_path: Path) -> None:
    parties = _vertical()
    boost = SecureBoostParams(num_trees=3, max_depth=3, key_bits=1024, seed=1)
    steps: list[tuple[str, Any]] = [
        ("psi", PsiParams()),
        ("split", SplitParams(test=0.25, train=0.75)),
        ("secureboost", boost),
        ("evaluate", EvaluateParams(plots=False)),
        ("predict", PredictParams()),
    ]

    run = run_steps(parties, steps, tmp_path)

    out = run.parties["bank"].outputs
    assert out["evaluate"]["evaluated_on"] == "test"
    assert out["evaluate"]["rows"] == out["split"]["test_rows"] == 135
    assert 0.9 < out["evaluate"]["auc"] < 1.0
    assert out["predict"]["predicted_rows"] == 540


def test_split_of_unaligned_vertical_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PartyFailed, match="put `psi` before it"):
        run_steps(_vertical(), [("split", SplitParams())], tmp_path)


def test_split_fractions_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="must be 1"):
        SplitParams(train=0.8, test=0.3)


def test_cross_validate_hetero_lr_reports_each_fold_and_the_mean(tmp_path: Path) -> None:
    parties = _vertical({"coord": "arbiter"})
    cv = CrossValidateParams(step="hetero_lr", k=3, params=HeteroLrParams(epochs=3, key_bits=1024), seed=2)

    run = run_steps(parties, [("psi", PsiParams()), ("cross_validate", cv)], tmp_path)

    out = run.parties["bank"].outputs["cross_validate"]
    assert out["k"] == 3 and len(out["folds"]) == 3
    assert out["auc_mean"] == pytest.approx(np.mean([f["auc"] for f in out["folds"]]), abs=1e-6)
    assert out["auc_mean"] > 0.95 and out["auc_std"] >= 0.0
    assert run.parties["shop"].outputs["cross_validate"] == {"k": 3}
    assert run.parties["bank"].model is None  # the fold models are not the job's model


def test_cross_validate_params_are_checked_as_the_named_step_s() -> None:
    base = "parties:\n  bank: {role: guest, data: b.csv}\nseed: 5\nsteps:\n  - cross_validate: "

    job = parse_job(base + "{step: hetero_lr, k: 4, params: {epochs: 2}}\n", step_params=step_params())
    with pytest.raises(ConfigError, match=r"params.epoch .*unknown parameter 'epoch'"):
        parse_job(base + "{step: hetero_lr, params: {epoch: 2}}\n", step_params=step_params())

    cv = job.steps[0].params
    assert isinstance(cv.params, HeteroLrParams) and cv.params.epochs == 2 and cv.params.seed == 5


def test_the_pooled_reference_sees_the_parties_own_split(tmp_path: Path) -> None:
    parties = _vertical()
    split = SplitParams(train=0.7, test=0.3, seed=8)
    run = run_steps(parties, [("psi", PsiParams(seed=6)), ("split", split)], tmp_path)
    tables = {p: (role, d) for p, (role, d) in parties.items() if d is not None}

    pooled = pooled_parts(tables, psi_seed=6, split=split)
    reference = converged_reference("hetero_lr", tables, psi_seed=6, split=split)

    bank = run.parties["bank"].context.splits
    for part in ("train", "test"):
        x, y = pooled[part]
        np.testing.assert_array_equal(x[:, :10], bank[part].x)
        np.testing.assert_array_equal(y, bank[part].y)
    assert 0.98 < reference["auc"] <= 1.0


@pytest.mark.parametrize(
    ("step", "params", "extra"),
    [
        ("secureboost", SecureBoostParams(num_trees=2, max_depth=2, key_bits=1024), {}),
        ("ss_lr", SSLRParams(epochs=5), {"third": "dealer"}),
    ],
)
def test_cross_validate_runs_secureboost_and_ss_lr(
    step: str, params: Any, extra: dict[str, str], tmp_path: Path
) -> None:
    cv = CrossValidateParams(step=step, k=2, params=params)

    run = run_steps(_vertical(extra), [("psi", PsiParams()), ("cross_validate", cv)], tmp_path)

    out = run.parties["bank"].outputs["cross_validate"]
    assert len(out["folds"]) == 2 and all(0.9 < f["auc"] <= 1.0 for f in out["folds"])
    assert (tmp_path / "bank" / "cv" / "fold1" / "models" / f"{step}.model").is_file()
