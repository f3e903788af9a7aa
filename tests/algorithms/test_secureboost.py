from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.evaluation import EvaluateParams, PredictParams
from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.algorithms.modelstore import load_model, save_model
from sharelearn.algorithms.package import load_package
from sharelearn.algorithms.vertical.secureboost import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    SecureBoostGuestModel,
    SecureBoostHostModel,
    SecureBoostParams,
    baseline_secureboost,
    load_secureboost,
)
from sharelearn.core.errors import ConfigError
from sharelearn.testing.leaks import assert_no_leak
from sharelearn.testing.steps import StepsRun, dataset, run_steps
from tests.algorithms.secureboost_helpers import fate_pair, reference_margins

pytestmark = pytest.mark.timeout(120)

# A fixed short budget (no early stopping), so that trees can be compared one by one with plaintext.
FIXED = {"learning_rate": 0.3, "validation_fraction": 0.0, "early_stopping_rounds": 0}
SMALL = SecureBoostParams(num_trees=3, max_depth=3, max_bins=16, key_bits=1024, **FIXED)


def _train(parties: dict, params: SecureBoostParams, folder: Path) -> StepsRun:
    return run_steps(
        parties, [("secureboost", params), ("evaluate", EvaluateParams(plots=False))], folder, aligned=True
    )


def _margins(model: SecureBoostGuestModel, folder: Path) -> np.ndarray:
    _, arrays = load_model(folder / "guest" / CHECKPOINT_FILE, "secureboost-checkpoint")
    margin = np.tile(np.asarray(model.base), (arrays["deltas"].shape[1], 1))
    for cls, delta in zip(arrays["tree_class"], arrays["deltas"], strict=True):
        margin[:, cls] += delta
    return margin


@pytest.mark.parametrize(
    ("name", "objective", "scheme", "rows"),
    [
        ("breast", "binary", "ou", None),
        ("student", "regression", "paillier", None),
        ("vehicle_scale", "multiclass", "ou", 300),
    ],
)
def test_secureboost_grows_the_same_trees_as_plaintext_boosting(
    name: str, objective: str, scheme: str, rows: int | None, tmp_path: Path
) -> None:
    guest, host = fate_pair(name, rows)
    params = replace(
        SMALL, objective=objective, he_scheme=scheme, num_trees=2 if objective == "multiclass" else 3
    )

    run = _train({"guest": ("guest", guest), "host": ("host", host)}, params, tmp_path)

    model = run.parties["guest"].model
    x, y = pool_vertical({"guest": ("guest", guest), "host": ("host", host)})
    want = reference_margins(x, y, params, model.base)
    np.testing.assert_allclose(_margins(model, tmp_path), want, atol=1e-5)
    owners = {o for t in model.trees for o, left in zip(t.owner, t.left, strict=True) if left >= 0}
    assert 0 in owners  # the host's private splits take part
    out = run.parties["guest"].outputs["evaluate"]
    metric = {"binary": "auc", "regression": "rmse", "multiclass": "accuracy"}[objective]
    central = baseline_secureboost(params, {"guest": ("guest", guest), "host": ("host", host)})[metric]
    assert abs(out[metric] - central) <= (0.02 if metric != "rmse" else 0.05 * central)
    assert run.parties["host"].outputs["evaluate"] == {}


def test_two_hosts_each_keep_their_own_lookup_table(tmp_path: Path) -> None:
    guest, host = fate_pair("breast")
    ids = host.ids
    h1 = dataset(ids, host.x[:, :10])
    h2 = dataset(ids, host.x[:, 10:])
    parties = {"guest": ("guest", guest), "h1": ("host", h1), "h2": ("host", h2)}

    run = _train(parties, SMALL, tmp_path)

    model = run.parties["guest"].model
    x, y = pool_vertical({"guest": ("guest", guest), "host": ("host", host)})
    np.testing.assert_allclose(
        _margins(model, tmp_path), reference_margins(x, y, SMALL, model.base), atol=1e-5
    )
    for k, name in enumerate(("h1", "h2")):
        table = run.parties[name].model
        used = [
            s
            for t in model.trees
            for s, o, left in zip(t.split_id, t.owner, t.left, strict=True)
            if o == k and left >= 0
        ]
        assert sorted(used) == list(range(len(table.feature)))
    assert run.parties["guest"].outputs["evaluate"]["auc"] > 0.97


def test_wire_carries_no_gradient_label_threshold_or_host_value(tmp_path: Path) -> None:
    guest, host = fate_pair("student")
    params = replace(SMALL, objective="regression", num_trees=2)

    run = _train({"guest": ("guest", guest), "host": ("host", host)}, params, tmp_path)

    y = np.asarray(guest.y)
    g0 = y.mean() - y  # the first tree's gradients
    secrets_to_host = {float(v) for v in np.concatenate([y, g0, guest.x.ravel()]) if v != 0.0}
    assert_no_leak(run.audit, "host", sorted(secrets_to_host), what="label / gradient / guest feature")
    table = run.parties["host"].model
    assert table.threshold.size > 0
    secrets_to_guest = {float(v) for v in np.concatenate([host.x.ravel(), table.threshold]) if v != 0.0}
    assert_no_leak(run.audit, "guest", sorted(secrets_to_guest), what="host feature value / threshold")


def test_saved_parts_predict_in_a_later_job(tmp_path: Path) -> None:
    guest, host = fate_pair("breast")
    parties = {"guest": ("guest", guest), "host": ("host", host)}
    trained = _train(parties, SMALL, tmp_path / "train")
    template = str(tmp_path / "train" / "{party}" / MODEL_FILE)

    later = run_steps(
        parties, [("predict", PredictParams(model=template, step="secureboost"))], tmp_path / "later"
    )

    assert isinstance(
        load_secureboost(load_package(tmp_path / "train" / "host" / MODEL_FILE)), SecureBoostHostModel
    )
    lines = (tmp_path / "later" / "guest" / "predictions.csv").read_text().splitlines()
    by_id = {line.split(",")[0]: float(line.split(",")[1]) for line in lines[1:]}
    scores = np.array([by_id[str(i)] for i in guest.ids])  # predict aligned the rows itself (psi)
    assert later.parties["guest"].outputs["predict"]["predicted_rows"] == len(guest)
    margin = _margins(trained.parties["guest"].model, tmp_path / "train")[:, 0]
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-margin)), rtol=1e-6)


def test_resume_continues_from_the_last_tree_every_party_completed(tmp_path: Path) -> None:
    guest, host = fate_pair("breast")
    parties = {"guest": ("guest", guest), "host": ("host", host)}
    params = replace(SMALL, num_trees=4, subsample=0.8, seed=7)
    full = _train(parties, params, tmp_path / "full")
    _train(parties, params, tmp_path / "crash")
    # The host "died" after tree 2: its checkpoint only holds the first two trees.
    _truncate_host_checkpoint(tmp_path / "crash" / "host" / CHECKPOINT_FILE, 2)

    resumed = _train(parties, replace(params, resume=True), tmp_path / "crash")

    assert resumed.parties["guest"].outputs["secureboost"]["resumed_from"] == 2
    a = load_package(tmp_path / "full" / "guest" / MODEL_FILE).arrays
    b = load_package(tmp_path / "crash" / "guest" / MODEL_FILE).arrays
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert resumed.parties["guest"].outputs["evaluate"] == full.parties["guest"].outputs["evaluate"]


def test_resume_refuses_a_checkpoint_of_other_parameters(tmp_path: Path) -> None:
    guest, host = fate_pair("breast", 120)
    parties = {"guest": ("guest", guest), "host": ("host", host)}
    _train(parties, replace(SMALL, num_trees=1), tmp_path)

    with pytest.raises(Exception, match="different secureboost run"):
        _train(parties, replace(SMALL, num_trees=2, resume=True), tmp_path)


def test_early_stopping_keeps_the_best_round_at_every_party(tmp_path: Path) -> None:
    guest, host = fate_pair("student")
    params = replace(
        SMALL,
        objective="regression",
        num_trees=25,
        learning_rate=1.0,
        max_depth=4,
        validation_fraction=0.3,
        early_stopping_rounds=2,
    )

    run = _train({"guest": ("guest", guest), "host": ("host", host)}, params, tmp_path)

    out = run.parties["guest"].outputs["secureboost"]
    model = run.parties["guest"].model
    assert out["early_stopped"] and out["trees"] < 25
    best = int(np.argmin(model.history["valid_loss"]))
    assert len(model.trees) == best + 1
    host_splits = sum(
        1 for t in model.trees for o, left in zip(t.owner, t.left, strict=True) if o == 0 and left >= 0
    )
    assert run.parties["host"].outputs["secureboost"]["splits"] == host_splits


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("max_depth", 0, "max_depth"),
        ("he_scheme", "rsa", "he_scheme"),
        ("subsample", 0.0, "subsample"),
        ("validation_fraction", 0.0, "validation_fraction"),  # early stopping (on by default) needs it
    ],
)
def test_bad_parameters_name_themselves(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=f"secureboost.*{match}"):
        SecureBoostParams(**{field: value})  # type: ignore[arg-type]


def test_guest_model_round_trips_through_its_file(tmp_path: Path) -> None:
    guest, host = fate_pair("breast", 150)
    run = _train({"guest": ("guest", guest), "host": ("host", host)}, replace(SMALL, num_trees=1), tmp_path)
    model = run.parties["guest"].model

    loaded = load_secureboost(load_package(tmp_path / "guest" / MODEL_FILE))

    assert isinstance(loaded, SecureBoostGuestModel)
    assert loaded.trees == model.trees and loaded.hosts == ["host"] and loaded.task == "binary"


def test_trees_that_stop_splitting_early_finish_at_every_party(tmp_path: Path) -> None:
    guest, host = fate_pair("breast", 150)
    params = replace(SMALL, num_trees=2, max_depth=4, gamma=1e6)

    run = _train({"guest": ("guest", guest), "host": ("host", host)}, params, tmp_path)

    assert [len(t.left) for t in run.parties["guest"].model.trees] == [1, 1]
    assert run.parties["host"].outputs["secureboost"]["splits"] == 0


def _truncate_host_checkpoint(path: Path, trees: int) -> None:
    meta, arrays = load_model(path, "secureboost-checkpoint")
    keep = arrays["tree"] < trees
    arrays = {k: (v[keep] if k != "key" else v) for k, v in arrays.items()}
    save_model(path, "secureboost-checkpoint", {**meta, "trees": trees}, arrays)


def test_multiclass_resume_in_the_middle_of_a_round_matches_the_full_run(tmp_path: Path) -> None:
    guest, host = fate_pair("vehicle_scale", 200)
    parties = {"guest": ("guest", guest), "host": ("host", host)}
    params = replace(SMALL, objective="multiclass", num_trees=2, validation_fraction=0.2)
    full = _train(parties, params, tmp_path / "full")
    _train(parties, params, tmp_path / "crash")
    _truncate_host_checkpoint(tmp_path / "crash" / "host" / CHECKPOINT_FILE, 3)  # round 0, class 3 lost

    resumed = _train(parties, replace(params, resume=True), tmp_path / "crash")

    assert resumed.parties["guest"].outputs["secureboost"]["resumed_from"] == 3
    full_part = load_package(tmp_path / "full" / "guest" / MODEL_FILE)
    crash_part = load_package(tmp_path / "crash" / "guest" / MODEL_FILE)
    a, b = (full_part.meta, full_part.arrays), (crash_part.meta, crash_part.arrays)
    assert a[0]["history"] == b[0]["history"]
    for key in a[1]:
        np.testing.assert_array_equal(a[1][key], b[1][key])
    assert resumed.parties["guest"].outputs["evaluate"] == full.parties["guest"].outputs["evaluate"]
