"""In-enclave training kernels: join under a memory cap, then LR / GBDT / XGBoost by streaming."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.algorithms.tee import gbdt, lr
from sharelearn.algorithms.tee import xgboost as txgb
from sharelearn.algorithms.tee.data import InMemoryTable, JoinedTable, MemoryBudget, SpillStore
from sharelearn.algorithms.tee.service import _model_from_wire
from sharelearn.core.codec import decode
from sharelearn.core.errors import CryptoError, DataError
from sharelearn.runtime.data import read_party_data
from sharelearn.runtime.jobspec import DataSpec
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.envelope import EnvelopeReader, rows_of, write_envelope
from sharelearn.tee.keys import AttestedClusterKey, ClusterKeys
from sharelearn.tee.policy import VerifiedEvidence

FATE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"
CAP = 40_000  # bytes: well below the 569 x 30 float64 table (~141 kB)


@pytest.fixture(scope="module")
def parties() -> dict[str, tuple[str, object]]:
    if not FATE.is_dir():
        pytest.skip(f"datasets not found at {FATE}")
    guest = read_party_data(DataSpec(FATE / "breast_hetero_guest.csv", label="y"))
    host = read_party_data(DataSpec(FATE / "breast_hetero_host.csv"))
    return {"bank": ("guest", guest), "shop": ("host", host)}


@pytest.fixture(scope="module")
def joined(parties: dict[str, tuple[str, object]], tmp_path_factory: pytest.TempPathFactory) -> JoinedTable:
    tmp = tmp_path_factory.mktemp("env")
    keys = ClusterKeys.generate("train")
    ident = EnclaveIdentity(os.urandom(32), os.urandom(32), 1, 1)
    ev = VerifiedEvidence("sim-sgx", "UpToDate", (), bytes(64), False, bytes(32), mrenclave=ident.mrenclave)
    target = AttestedClusterKey("train", 1, keys.ingest_pk, keys.fingerprint, 2**40, ev)
    readers = []
    for name, (_, data) in parties.items():
        d = data  # type: ignore[assignment]
        order = np.random.default_rng(len(name)).permutation(len(d))  # parties' row orders differ
        write_envelope(
            tmp / name,
            rows_of([d.ids[i] for i in order], d.x[order], None if d.y is None else d.y[order], 50),  # type: ignore[attr-defined]
            target=target,
            dataset=name,
            owner=name,
            features=d.feature_names,  # type: ignore[attr-defined]
            label=None if d.y is None else "y",
            allowed_ops=["tee_train"],  # type: ignore[attr-defined]
        )
        readers.append(
            EnvelopeReader(
                tmp / name, identity=ident, ingest_keys={("train", 1): keys.ingest_key}, op="tee_train"
            )
        )
    return JoinedTable.build(readers, MemoryBudget(CAP), SpillStore(keys.spill_key))


def _scores(model: object, src: object) -> tuple[np.ndarray, np.ndarray]:
    blocks = list(src.blocks())  # type: ignore[attr-defined]
    s = np.concatenate([model.predict_block(x) for x, _ in blocks])  # type: ignore[attr-defined]
    return s, np.concatenate([y for _, y in blocks])


def test_join_is_streamed_in_blocks_within_the_cap(
    joined: JoinedTable, parties: dict[str, tuple[str, object]]
) -> None:
    x, y = pool_vertical(parties)  # type: ignore[arg-type]
    assert joined.n_rows == len(y) and joined.n_blocks > 3
    assert joined.budget.peak <= CAP < x.nbytes
    got = sorted(map(tuple, np.vstack([b for b, _ in joined.blocks()]).round(9).tolist()))
    assert got == sorted(map(tuple, x.round(9).tolist()))  # same joined rows as the pooled table


def test_streamed_gbdt_equals_the_same_gbdt_on_pooled_data(
    joined: JoinedTable, parties: dict[str, tuple[str, object]]
) -> None:
    params = gbdt.GbdtParams(num_trees=5, max_depth=3)
    x, y = pool_vertical(parties)  # type: ignore[arg-type]
    pooled = gbdt.train_gbdt(InMemoryTable(x, y), params)
    streamed = gbdt.train_gbdt(joined, params)
    s, yy = _scores(streamed, joined)
    assert abs(roc_auc_score(yy, s) - roc_auc_score(y, pooled.predict_block(x))) < 1e-9
    assert streamed.history["loss"][-1] < streamed.history["loss"][0]
    back = _model_from_wire(decode(streamed.to_bytes()))  # type: ignore[arg-type]
    np.testing.assert_allclose(back.predict_block(x), streamed.predict_block(x))


def test_streamed_xgboost_and_lr_match_their_pooled_baselines(
    joined: JoinedTable, parties: dict[str, tuple[str, object]]
) -> None:
    x, y = pool_vertical(parties)  # type: ignore[arg-type]
    xp = txgb.XgbParams(num_trees=10, max_depth=3)
    xgb_model = txgb.train_xgboost(joined, xp)
    s, yy = _scores(xgb_model, joined)
    assert abs(roc_auc_score(yy, s) - roc_auc_score(y, txgb.baseline_scores(x, y, xp))) < 0.005
    back = _model_from_wire(decode(xgb_model.to_bytes()))  # type: ignore[arg-type]
    np.testing.assert_allclose(back.predict_block(x), xgb_model.predict_block(x))

    lp = lr.LrParams()
    lr_model = lr.train_lr(joined, lp)
    s, yy = _scores(lr_model, joined)
    assert abs(roc_auc_score(yy, s) - roc_auc_score(y, lr.baseline_scores(x, y, lp))) < 1e-3


def test_memory_cap_and_spill_integrity_are_enforced() -> None:
    budget = MemoryBudget(1000)
    with pytest.raises(DataError, match="memory cap exceeded"):
        budget.reserve(2000, "a block")
    spill = SpillStore(os.urandom(32))
    spill.append("joined_0", b"rows of a block")
    assert list(spill.records("joined_0")) == [b"rows of a block"]
    path = spill.root / "joined_0"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(CryptoError, match="modified on disk"):
        list(spill.records("joined_0"))
    assert b"rows of a block" not in raw  # encrypted at rest on the untrusted disk
    spill.close()
