from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from sharelearn.algorithms.evaluation import EvaluateParams, PredictParams
from sharelearn.algorithms.horizontal import models
from sharelearn.algorithms.horizontal.fedavg import (
    FedAvgModel,
    FedAvgParams,
    baseline_fedavg,
    load_fedavg_model,
)
from sharelearn.algorithms.horizontal.options import SecAggOptions
from sharelearn.algorithms.package import load_package
from sharelearn.core.errors import ConfigError, DataError, PartyFailed
from sharelearn.testing.steps import dataset, load_csv, run_steps

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"


def _homo(name: str, clients: tuple[str, ...]) -> dict[str, tuple[str, Any]]:
    parties: dict[str, tuple[str, Any]] = {"agg": ("server", load_csv(DATA / f"{name}_test.csv", label="y"))}
    for c in clients:
        parties[c] = ("client", load_csv(DATA / f"{name}_{c}.csv", label="y"))
    return parties


def _run(parties: dict[str, tuple[str, Any]], params: FedAvgParams, tmp_path: Path) -> dict[str, Any]:
    run = run_steps(parties, [("fedavg", params), ("evaluate", EvaluateParams(plots=False))], tmp_path)
    return {p: r.outputs for p, r in run.parties.items()} | {"_run": run}


@pytest.mark.parametrize("secure", [False, True])
def test_breast_homo_matches_the_centralised_model(secure: bool, tmp_path: Path) -> None:
    parties = _homo("breast_homo", ("guest", "host"))
    params = FedAvgParams(rounds=10, learning_rate=0.1, secure_aggregation=secure)

    out = _run(parties, params, tmp_path)

    fed, ev = out["agg"]["fedavg"], out["agg"]["evaluate"]
    central = baseline_fedavg(params, {p: d for p, d in parties.items()})
    assert abs(ev["auc"] - central["auc"]) <= 0.01
    assert ev["auc"] > 0.97
    assert fed["secure_aggregation"] is secure and fed["clients"] == 2 and fed["parameters"] == 31
    assert len(fed["history"]["test_auc"]) == len(fed["history"]["train_loss"]) == 10
    assert fed["history"]["train_loss"][-1] < fed["history"]["train_loss"][0]
    assert out["guest"]["fedavg"]["rounds_joined"] == 10
    # A client scores its own rows with the final model (never another party's).
    guest = out["guest"]["evaluate"]
    assert guest["rows"] == len(parties["guest"][1]) and guest["auc"] > 0.9
    # Every party ends with the same global model; the server's file loads back.
    server_model = out["_run"].parties["agg"].model
    client_model = out["_run"].parties["host"].model
    assert np.array_equal(server_model.weights, client_model.weights)
    loaded = load_fedavg_model(load_package(Path(fed["model_path"])))
    assert (
        np.array_equal(loaded.weights, server_model.weights)
        and round(loaded.history["test_auc"][-1], 6) == fed["test_auc"]
    )


def test_secure_aggregation_hides_updates_that_plain_fedavg_shows(tmp_path: Path) -> None:
    parties = _homo("breast_homo", ("guest", "host"))
    leaks = {}
    for secure in (False, True):
        params = FedAvgParams(rounds=2, secure_aggregation=secure, seed=3)
        run = run_steps(parties, [("fedavg", params)], tmp_path / str(secure))
        # What the clients computed, recomputed outside the protocol from the same seeds.
        w0 = models.init_weights(run.parties["agg"].model.spec)
        from sharelearn.algorithms.horizontal.fedavg import ClientTrainer

        trainer = ClientTrainer("guest", parties["guest"][1], params)
        trainer.spec = run.parties["agg"].model.spec
        update = trainer.update(w0, 0)
        leaks[secure] = run.audit.count_leaks("agg", list(update[:31]))
    assert leaks[False] > 20  # the audit sees plain updates...
    assert leaks[True] == 0  # ...and nothing of them under secure aggregation


def test_secure_fedavg_tolerates_a_client_dropping_every_round(tmp_path: Path) -> None:
    parties = _homo("breast_homo", ("guest", "host"))
    parties["extra"] = ("client", load_csv(DATA / "breast_homo_guest.csv", label="y"))
    params = FedAvgParams(
        rounds=3,
        secure_aggregation=True,
        secagg=SecAggOptions(threshold=2),
        simulate_dropouts=("extra:share",),
    )

    out = _run(parties, params, tmp_path)

    assert out["agg"]["fedavg"]["dropouts"] == 3
    assert out["extra"]["fedavg"]["rounds_joined"] == 0
    assert out["agg"]["evaluate"]["auc"] > 0.95


def test_plain_fedavg_skips_a_client_that_sends_no_update(tmp_path: Path) -> None:
    parties = _homo("breast_homo", ("guest", "host"))

    out = _run(parties, FedAvgParams(rounds=2, simulate_dropouts=("host:update",)), tmp_path)

    assert out["agg"]["fedavg"]["dropouts"] == 2 and out["host"]["fedavg"]["rounds_joined"] == 0
    assert out["agg"]["evaluate"]["auc"] > 0.95


def test_fedprox_unweighted_and_client_sampling_run_and_differ(tmp_path: Path) -> None:
    parties = _homo("breast_homo", ("guest", "host"))
    base = _run(parties, FedAvgParams(rounds=3), tmp_path / "a")["agg"]["fedavg"]
    prox = _run(parties, FedAvgParams(rounds=3, proximal_mu=0.5, weighted=False), tmp_path / "b")
    sampled = _run(parties, FedAvgParams(rounds=4, fraction=0.5, validation_fraction=0.2), tmp_path / "c")

    assert prox["agg"]["fedavg"]["history"]["train_loss"] != base["history"]["train_loss"]
    assert sum(sampled[c]["fedavg"]["rounds_joined"] for c in ("guest", "host")) == 4
    assert len(sampled["agg"]["fedavg"]["history"]["client_val_loss"]) == 4


def test_mlp_on_vehicle_scale_learns_four_classes(tmp_path: Path) -> None:
    parties = _homo("vehicle_scale_homo", ("guest", "host"))
    params = FedAvgParams(
        model="mlp",
        rounds=4,
        optimizer="adam",
        learning_rate=0.02,
        batch_size=64,
        hidden=(16,),
        secure_aggregation=True,
    )

    out = _run(parties, params, tmp_path)

    assert out["agg"]["fedavg"]["task"] == "multiclass"
    assert out["agg"]["evaluate"]["accuracy"] > 0.5  # four classes: chance is 0.25
    assert out["agg"]["fedavg"]["history"]["test_accuracy"][-1] == out["agg"]["evaluate"]["accuracy"]


def test_cnn_on_image_shaped_digits(tmp_path: Path) -> None:
    digits = load_digits()
    x, y = digits.data[:900] / 16.0, digits.target[:900].astype(np.float64)
    parties: dict[str, tuple[str, Any]] = {
        "agg": ("server", dataset(range(700, 900), x[700:], y[700:])),
        "a": ("client", dataset(range(350), x[:350], y[:350])),
        "b": ("client", dataset(range(350, 700), x[350:700], y[350:700])),
    }
    params = FedAvgParams(
        model="cnn",
        image_shape=(1, 8, 8),
        hidden=(32,),
        rounds=6,
        local_epochs=2,
        optimizer="adam",
        learning_rate=0.01,
        batch_size=32,
    )

    out = _run(parties, params, tmp_path)

    assert out["agg"]["evaluate"]["accuracy"] > 0.65  # ten classes: chance is 0.1
    assert (
        out["agg"]["fedavg"]["history"]["train_loss"][-1] < out["agg"]["fedavg"]["history"]["train_loss"][0]
    )


def test_linear_regression_on_student_homo_tracks_the_centralised_rmse(tmp_path: Path) -> None:
    parties = _homo("student_homo", ("guest", "host"))
    params = FedAvgParams(model="linear", rounds=20, learning_rate=0.001, batch_size=32)  # raw features

    out = _run(parties, params, tmp_path)

    central = baseline_fedavg(params, parties)
    assert out["agg"]["fedavg"]["task"] == "regression"
    assert abs(out["agg"]["evaluate"]["rmse"] - central["rmse"]) < 0.5


def test_predict_step_loads_the_saved_model(tmp_path: Path) -> None:
    parties = _homo("breast_homo", ("guest", "host"))
    first = _run(parties, FedAvgParams(rounds=2), tmp_path / "train")
    assert first["agg"]["fedavg"]["model_path"] == str(tmp_path / "train" / "agg" / "models" / "fedavg.model")
    model_path = str(tmp_path / "train" / "{party}" / "models" / "fedavg.model")  # each party loads its own

    run = run_steps(
        {"agg": parties["agg"], "guest": (parties["guest"][0], None), "host": (parties["host"][0], None)},
        [("predict", PredictParams(model=model_path, step="fedavg"))],
        tmp_path / "predict",
    )

    assert run.parties["agg"].outputs["predict"]["predicted_rows"] == 114
    assert isinstance(run.parties["agg"].model, FedAvgModel)


def test_bad_parameters_and_mismatched_clients_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fedavg.model"):
        FedAvgParams(model="forest")
    with pytest.raises(ConfigError, match="fedavg.fraction"):
        FedAvgParams(fraction=0.0)
    with pytest.raises(ConfigError, match="simulate_dropouts"):
        FedAvgParams(simulate_dropouts=("a:sometime",))
    with pytest.raises(ConfigError, match="the stage must be one of advertise"):
        FedAvgParams(secure_aggregation=True, simulate_dropouts=("a:update",))
    with pytest.raises(ConfigError, match="image_shape"):
        models.ModelSpec("cnn", "binary", 10, 2, image_shape=(1, 3, 3))
    rng = np.random.default_rng(0)
    parties: dict[str, tuple[str, Any]] = {
        "agg": ("server", None),
        "a": ("client", dataset(range(20), rng.normal(size=(20, 3)), rng.integers(0, 2, 20))),
        "b": ("client", dataset(range(20), rng.normal(size=(20, 4)), rng.integers(0, 2, 20))),
    }
    with pytest.raises(PartyFailed) as info:
        run_steps(parties, [("fedavg", FedAvgParams(rounds=1))], tmp_path, timeout=20)
    assert isinstance(info.value.__cause__, DataError)
    assert "client 'b''s columns do not match the columns of client 'a'" in str(info.value)
    assert "column 'x3' is not there" in str(info.value)
