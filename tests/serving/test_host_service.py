"""The host service in-process: feature providers, what its replies carry, who may call it.

Data: a secureboost and a hetero_lr model on scikit-learn's breast cancer split (`serving_models`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_models import Trained, train, write_csv

from sharelearn.algorithms.package import load_package
from sharelearn.core import codec
from sharelearn.core.errors import DataError
from sharelearn.runtime.certs import init_certs
from sharelearn.runtime.serving.host import HostService
from sharelearn.runtime.serving.providers import SqliteProvider, TableProvider, load_provider
from sharelearn.runtime.serving.replicas import PartialCache
from sharelearn.runtime.serving.wire import RpcClient, RpcFailed, serve_rpc

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def boost(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train("secureboost", "binary", 1, tmp_path_factory.mktemp("boost"))


def _service(trained: Trained, provider: object) -> HostService:
    model_id = load_package(trained.packages["shop0"]).identity.model_id
    service = HostService("shop0", model_id, trained.packages["shop0"].parent, provider)  # type: ignore[arg-type]
    service.load(None)
    return service


def test_csv_parquet_and_sqlite_providers_give_the_same_rows(boost: Trained, tmp_path: Path) -> None:
    table = boost.tables["shop0"]
    csv = write_csv(table, tmp_path / "shop.csv")
    frame = pd.read_csv(csv, dtype={"id": str})
    frame.to_parquet(tmp_path / "shop.parquet")
    with sqlite3.connect(tmp_path / "shop.db") as db:
        frame.to_sql("features", db, index=False)
    ids = [str(i) for i in np.asarray(table.ids)[[5, 0, 7]]] + ["nobody"]
    names = list(reversed(table.feature_names))

    got = [
        load_provider(s).lookup(ids, names)
        for s in (str(csv), str(tmp_path / "shop.parquet"), f"sqlite:{tmp_path / 'shop.db'}")
    ]

    want = np.asarray(table.x)[[5, 0, 7]][:, ::-1]
    for x, unknown in got:
        np.testing.assert_array_equal(x[:3], want)
        assert unknown.tolist() == [False, False, False, True] and np.isnan(x[3]).all()


def test_a_provider_lacking_a_model_column_is_refused_naming_it(boost: Trained, tmp_path: Path) -> None:
    csv = write_csv(boost.tables["shop0"], tmp_path / "shop.csv")
    frame = pd.read_csv(csv).drop(columns=[boost.tables["shop0"].feature_names[0]])
    frame.to_csv(tmp_path / "short.csv", index=False)

    with pytest.raises(DataError, match=f"lacks columns \\['{boost.tables['shop0'].feature_names[0]}'\\]"):
        _service(boost, TableProvider(tmp_path / "short.csv"))
    with pytest.raises(DataError, match="no such table"):
        SqliteProvider(tmp_path / "empty.db", table="features")


def test_a_secureboost_host_reply_carries_only_split_directions(boost: Trained, tmp_path: Path) -> None:
    service = _service(boost, TableProvider(write_csv(boost.tables["shop0"], tmp_path / "shop.csv")))
    table = boost.tables["shop0"]
    ids = [str(i) for i in table.ids]
    entries = service.versions[1].threshold.size  # type: ignore[union-attr]

    reply = service.partial({"model": service.model_id, "version": 1, "ids": ids}, "bank")
    raw = codec.encode(reply)

    assert reply["partial"].dtype == np.uint8 and reply["partial"].shape == (len(ids), (entries + 7) // 8)
    for value in np.unique(np.asarray(table.x)):  # no host feature value reaches the guest
        assert np.float64(value).tobytes() not in raw


def test_only_parties_of_the_model_may_call_the_host(boost: Trained, tmp_path: Path) -> None:
    service = _service(boost, TableProvider(write_csv(boost.tables["shop0"], tmp_path / "shop.csv")))
    creds = init_certs(["bank", "shop0", "mallory"], tmp_path / "certs")
    server, port = serve_rpc(creds["shop0"], "127.0.0.1:0", service.handlers(), service.allowed)
    doc = {"model": service.model_id, "version": 1, "ids": [str(boost.tables["shop0"].ids[0])]}
    try:
        bank = RpcClient(creds["bank"], "shop0", f"127.0.0.1:{port}").call("Partial", doc, timeout=10)
        with pytest.raises(RpcFailed) as refused:
            RpcClient(creds["mallory"], "shop0", f"127.0.0.1:{port}").call("Partial", doc, timeout=10)
        with pytest.raises(RpcFailed) as wrong_version:
            RpcClient(creds["bank"], "shop0", f"127.0.0.1:{port}").call(
                "Partial", {**doc, "version": 9}, timeout=10
            )
    finally:
        server.stop(0)

    assert bank["unknown"].size == 0
    assert refused.value.code == "PERMISSION_DENIED" and "not a party of this model" in str(refused.value)
    assert wrong_version.value.code == "FAILED_PRECONDITION" and "has not loaded version 9" in str(
        wrong_version.value
    )


def test_the_partial_cache_forgets_after_its_ttl() -> None:
    cache = PartialCache(ttl=0.2)
    key = ("m", 1, "shop0", "u1")

    cache.put(key, np.arange(3, dtype=np.uint64))
    fresh = cache.get(key)
    time.sleep(0.3)
    stale = cache.get(key)

    assert fresh is not None and fresh.tolist() == [0, 1, 2] and stale is None
    assert (cache.hits, cache.misses) == (1, 1)
