"""Online scores equal batch `predict` scores (1e-9), guest and hosts in separate processes over mTLS.

Data: scikit-learn's breast cancer (binary), iris (multiclass), diabetes (regression), columns split
between a guest and one or two hosts (`serving_models`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serving_models import Trained, train, write_csv
from serving_procs import Fleet, fleet

from sharelearn.algorithms.package import load_package
from sharelearn.runtime.certs import init_certs, load_credentials
from sharelearn.runtime.serving.client import ServingClient
from sharelearn.runtime.serving.wire import RpcClient

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(300)]


def start_model(f: Fleet, trained: Trained, tmp: Path, *extra: str) -> tuple[ServingClient, str]:
    """Certificates, one host process per host, one guest process; a client of the guest."""
    certs = tmp / "certs"
    init_certs(list(trained.roles), certs)
    model_id = load_package(trained.packages["bank"]).identity.model_id
    hosts = {}
    for h in trained.hosts:
        csv = write_csv(trained.tables[h], tmp / f"{h}.csv")
        hosts[h] = [f.host(h, model_id, trained.packages[h].parent, csv, certs)]
    guest = f.guest("bank", model_id, trained.packages["bank"].parent, certs, hosts, *extra)
    return ServingClient(f"http://127.0.0.1:{guest.ready['http_port']}"), model_id


def guest_features(trained: Trained, rows: np.ndarray) -> dict[str, list[float]]:
    table = trained.tables["bank"]
    x = np.asarray(table.x)[rows]
    return {name: x[:, k].tolist() for k, name in enumerate(table.feature_names)}


CASES = [
    ("hetero_lr", "binary", 1),
    ("hetero_lr_two_party", "binary", 1),
    ("hetero_lr", "binary", 2),
    ("secureboost", "binary", 1),
    ("secureboost", "binary", 2),
    ("secureboost", "multiclass", 1),
    ("secureboost", "regression", 2),
]


@pytest.mark.parametrize(("kind", "task", "hosts"), CASES)
def test_online_scores_equal_batch_predict(tmp_path: Path, kind: str, task: str, hosts: int) -> None:
    trained = train(kind, task, hosts, tmp_path / "train")
    ids = np.asarray(trained.tables["bank"].ids)
    rows = np.random.default_rng(3).permutation(len(ids))

    with fleet(tmp_path) as f:
        client, model = start_model(f, trained, tmp_path)
        batch = client.predict(model, ids[rows].tolist(), guest_features(trained, rows))
        single = [client.predict(model, [ids[r]], guest_features(trained, np.array([r]))) for r in rows[:5]]

    assert batch["errors"] == [] and batch["version"] == 1
    np.testing.assert_allclose(np.asarray(batch["scores"]), trained.batch_scores[rows], rtol=0, atol=1e-9)
    for r, reply in zip(rows[:5], single, strict=True):
        np.testing.assert_allclose(np.asarray(reply["scores"][0]), trained.batch_scores[r], rtol=0, atol=1e-9)


def test_the_guest_grpc_endpoint_scores_as_rest(tmp_path: Path) -> None:
    trained = train("secureboost", "multiclass", 1, tmp_path / "train")
    ids = np.asarray(trained.tables["bank"].ids)
    rows = np.arange(0, 150, 7)

    with fleet(tmp_path) as f:
        client, model = start_model(f, trained, tmp_path, "--grpc", "127.0.0.1:0")
        port = f.procs[-1].ready["grpc_port"]
        creds = load_credentials(tmp_path / "certs", "bank")
        doc = {"ids": ids[rows].tolist(), "features": guest_features(trained, rows)}
        over_grpc = RpcClient(creds, "bank", f"127.0.0.1:{port}").call("Predict", doc, timeout=30)
        over_rest = client.predict(model, ids[rows].tolist(), guest_features(trained, rows))

    assert over_grpc["errors"] == [] and over_grpc["scores"] == over_rest["scores"]
    np.testing.assert_allclose(np.asarray(over_grpc["scores"]), trained.batch_scores[rows], rtol=0, atol=1e-9)
