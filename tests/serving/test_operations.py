"""Serving operations across processes: versions (two phases, rollback, canary), replicas, deadlines.

One hetero_lr model (breast cancer split between the bank and shop0) is trained once; a second
version with other weights is written to every party's folder, and a third to the guest's only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_models import Trained, train, write_csv
from serving_procs import Fleet, fleet

from sharelearn.algorithms.package import ModelPackage, load_package, save_package, with_version
from sharelearn.runtime.certs import init_certs
from sharelearn.runtime.serving.client import ServingClient, ServingError

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(400)]


def _scaled(pkg: ModelPackage, version: int, factor: float) -> ModelPackage:
    arrays = {**pkg.arrays, "weights": pkg.arrays["weights"] * factor}
    return with_version(replace(pkg, arrays=arrays), version)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Path, str]:
    tmp = tmp_path_factory.mktemp("ops")
    trained = train("hetero_lr", "binary", 1, tmp / "train")
    for party in ("bank", "shop0"):
        pkg = load_package(trained.packages[party])
        save_package(trained.packages[party].parent / "v2.model", _scaled(pkg, 2, 0.5))
    guest_pkg = load_package(trained.packages["bank"])
    save_package(trained.packages["bank"].parent / "v3.model", _scaled(guest_pkg, 3, 0.25))
    init_certs(list(trained.roles), tmp / "certs")
    return trained, tmp, guest_pkg.identity.model_id


def _features(trained: Trained, rows: Any) -> dict[str, list[float]]:
    x = np.asarray(trained.tables["bank"].x)[rows]
    return {n: x[:, k].tolist() for k, n in enumerate(trained.tables["bank"].feature_names)}


def _start(
    f: Fleet, trained: Trained, tmp: Path, model_id: str, replicas: int, *extra: str, features: str = ""
) -> Any:
    csv = write_csv(trained.tables["shop0"], tmp / "shop0.csv")
    folder = trained.packages["shop0"].parent
    hosts = [
        f.host("shop0", model_id, folder, features or csv, tmp / "certs", "--version", "1")
        for _ in range(replicas)
    ]
    guest = f.guest(
        "bank",
        model_id,
        trained.packages["bank"].parent,
        tmp / "certs",
        {"shop0": hosts},
        "--version",
        "1",
        *extra,
    )
    return ServingClient(f"http://127.0.0.1:{guest.ready['http_port']}", timeout=10.0), hosts


@pytest.fixture(scope="module")
def served(model: tuple[Trained, Path, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    trained, tmp, model_id = model
    with fleet(tmp_path_factory.mktemp("served")) as f:
        client, _ = _start(f, trained, tmp, model_id, 1, "--max-batch", "100", "--cache-ttl", "60")
        yield trained, client, model_id


def test_a_version_one_party_lacks_is_refused_naming_it(served: Any) -> None:
    _, client, model_id = served

    with pytest.raises(ServingError) as refused:
        client.load(model_id, 3)
    status = client.status(model_id)

    assert refused.value.status == 409 and "shop0" in str(refused.value) and "version 3" in str(refused.value)
    assert status["active"] == 1 and 3 not in status["loaded"]


def test_an_unknown_id_gives_a_per_row_error(served: Any) -> None:
    trained, client, model_id = served
    ids = np.asarray(trained.tables["bank"].ids)

    reply = client.predict(model_id, [ids[0], "nobody", ids[1]], _features(trained, [0, 0, 1]), version=1)

    assert reply["errors"] == [{"row": 1, "id": "nobody", "error": "id unknown at host 'shop0'"}]
    assert reply["scores"][1] is None
    np.testing.assert_allclose(
        [reply["scores"][0], reply["scores"][2]], trained.batch_scores[[0, 1]], atol=1e-9
    )


def test_two_phase_switch_then_rollback(served: Any) -> None:
    trained, client, model_id = served
    ids = np.asarray(trained.tables["bank"].ids)[:20].tolist()
    feats = _features(trained, slice(0, 20))

    client.load(model_id, 2)
    after_switch = client.activate(model_id, 2)
    v2 = client.predict(model_id, ids, feats)
    after_rollback = client.rollback(model_id)
    v1 = client.predict(model_id, ids, feats)

    assert (after_switch["active"], after_switch["previous"]) == (2, 1)
    assert v2["version"] == 2 and not np.allclose(v2["scores"], trained.batch_scores[:20])
    assert after_rollback["active"] == 1 and v1["version"] == 1
    np.testing.assert_allclose(v1["scores"], trained.batch_scores[:20], atol=1e-9)


def test_canary_sends_its_share_to_the_new_version(served: Any) -> None:
    trained, client, model_id = served
    ids = np.asarray(trained.tables["bank"].ids)

    client.load(model_id, 2)
    client.canary(model_id, 2, 0.3)
    versions = [
        client.predict(model_id, [ids[k % 150]], _features(trained, [k % 150]))["version"] for k in range(200)
    ]
    client.canary(model_id, None, 0.0)

    share = versions.count(2) / len(versions)
    assert set(versions) == {1, 2} and 0.18 < share < 0.42  # Binomial(200, 0.3): 4 sd either side


def test_batch_cap_cache_and_metrics(served: Any) -> None:
    trained, client, model_id = served
    ids = np.asarray(trained.tables["bank"].ids)

    with pytest.raises(ServingError) as too_big:
        client.predict(model_id, ids[:101].tolist(), _features(trained, slice(0, 101)), version=1)
    before = client.status(model_id)["cache"]["hits"]
    client.predict(model_id, ids[:10].tolist(), _features(trained, slice(0, 10)), version=1)
    client.predict(model_id, ids[:10].tolist(), _features(trained, slice(0, 10)), version=1)
    hits = client.status(model_id)["cache"]["hits"] - before
    metrics = client.metrics()

    assert too_big.value.status == 413 and "1..100" in str(too_big.value)
    assert hits >= 10
    assert f'sharelearn_serving_requests_total{{model="{model_id}",version="1"}}' in metrics
    assert f'sharelearn_serving_latency_quantile_ms{{model="{model_id}",quantile="p99"}}' in metrics
    assert f'sharelearn_serving_errors_total{{kind="request",model="{model_id}"}}' in metrics


def _hammer(
    client: ServingClient, model_id: str, trained: Trained, stop: threading.Event, out: list[Any]
) -> None:
    ids = np.asarray(trained.tables["bank"].ids)
    k = 0
    while not stop.is_set():
        try:
            out.append(client.predict(model_id, [ids[k % 150]], _features(trained, [k % 150])))
        except ServingError as exc:
            out.append(exc)
        k += 1


def test_a_killed_replica_costs_no_request(model: tuple[Trained, Path, str], tmp_path: Path) -> None:
    trained, tmp, model_id = model
    with fleet(tmp_path) as f:
        client, hosts = _start(f, trained, tmp, model_id, 2)
        stop, out = threading.Event(), list[Any]()
        worker = threading.Thread(target=_hammer, args=(client, model_id, trained, stop, out))
        worker.start()
        time.sleep(2.0)
        hosts[0].kill()
        time.sleep(3.0)
        stop.set()
        worker.join(30)

    failed = [r for r in out if isinstance(r, Exception)]
    assert len(out) > 20 and failed == []


def test_no_replica_left_gives_503_naming_the_host_within_the_deadline(
    model: tuple[Trained, Path, str], tmp_path: Path
) -> None:
    trained, tmp, model_id = model
    ids = np.asarray(trained.tables["bank"].ids)
    with fleet(tmp_path) as f:
        client, hosts = _start(f, trained, tmp, model_id, 1, "--deadline-ms", "500")
        client.predict(model_id, [ids[0]], _features(trained, [0]))
        hosts[0].kill()
        start = time.monotonic()
        with pytest.raises(ServingError) as down:
            client.predict(model_id, [ids[0]], _features(trained, [0]))
        elapsed = time.monotonic() - start

    assert down.value.status == 503 and "host 'shop0' unavailable" in str(down.value)
    assert elapsed < 2.0


def test_a_slow_host_gives_503_within_the_deadline(
    model: tuple[Trained, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained, tmp, model_id = model
    ids = np.asarray(trained.tables["bank"].ids)
    monkeypatch.setenv("SLOW_PROVIDER_CSV", str(write_csv(trained.tables["shop0"], tmp_path / "slow.csv")))
    monkeypatch.setenv("SLOW_PROVIDER_DELAY", "3")
    with fleet(tmp_path) as f:
        client, _ = _start(
            f, trained, tmp, model_id, 1, "--deadline-ms", "400", features="py:slow_provider:make"
        )
        start = time.monotonic()
        with pytest.raises(ServingError) as slow:
            client.predict(model_id, [ids[0]], _features(trained, [0]))
        elapsed = time.monotonic() - start

    assert slow.value.status == 503 and "shop0" in str(slow.value) and "DEADLINE_EXCEEDED" in str(slow.value)
    assert elapsed < 1.5
