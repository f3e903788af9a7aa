"""The TEE job steps in-process (parties as threads over the in-memory link; enclaves are processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sharelearn.algorithms.context import StepContext
from sharelearn.algorithms.evaluation import EvaluateParams
from sharelearn.algorithms.tee.service import HPKE_SUITE, predict_digest
from sharelearn.algorithms.tee.steps import (
    TeeModel,
    TeeServeParams,
    TeeTrainParams,
    TeeUploadParams,
    tee_baseline,
)
from sharelearn.core.codec import encode
from sharelearn.core.errors import ConfigError, PartyFailed, ProtocolError
from sharelearn.tee.cluster import call_endpoint
from sharelearn.tee.keys import x25519_public
from sharelearn.testing.steps import load_csv, run_steps

FATE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def parties() -> dict[str, tuple[str, object]]:
    if not FATE.is_dir():
        pytest.skip(f"datasets not found at {FATE}")
    return {
        "bank": ("guest", load_csv(FATE / "breast_hetero_guest.csv", label="y")),
        "shop": ("host", load_csv(FATE / "breast_hetero_host.csv")),
    }


def test_upload_train_evaluate_serve_in_enclaves(
    parties: dict[str, tuple[str, object]], tmp_path: Path
) -> None:
    train = TeeTrainParams(model="gbdt", num_trees=5, max_depth=3, memory_cap_mb=0.05)
    steps = [
        ("tee_upload", TeeUploadParams(chunk_rows=100)),
        ("tee_train", train),
        ("evaluate", EvaluateParams(plots=False)),
        ("tee_serve", TeeServeParams(instances=2, requests=20, concurrency=2)),
    ]
    run = run_steps(parties, steps, tmp_path, engine="tee", timeout=150)  # type: ignore[arg-type]
    try:
        bank, shop = run.parties["bank"].outputs, run.parties["shop"].outputs
        assert bank["tee_upload"]["simulation"] is True and shop["tee_upload"]["rows"] == 569
        assert (
            bank["tee_upload"]["mrenclave"] == shop["tee_upload"]["mrenclave"]
        )  # both pinned the same build
        t = bank["tee_train"]
        assert t["peak_bytes"] <= t["memory_cap_bytes"] < t["data_bytes"] and t["blocks"] > 1
        assert shop["evaluate"] == {}  # only the label holder gets scores
        auc = bank["evaluate"]["auc"]
        assert abs(auc - tee_baseline(train, parties)["auc"]) < 1e-5  # type: ignore[arg-type]
        serve = bank["tee_serve"]
        assert serve["instances"] == 2 and serve["requests"] == 20 and serve["failed"] == 0
        assert serve["max_abs_diff_vs_evaluate"] < 1e-9  # fused online answers == batch scores
        assert serve["p99_ms"] >= serve["p50_ms"] > 0
        _only_authorised_clients_get_predictions(run.parties["bank"].context)
        # the envelopes on storage hold no plaintext ids
        raw = Path(bank["tee_upload"]["envelope"]).read_bytes()
        assert str(parties["bank"][1].ids[0]).encode() + b"," not in raw  # type: ignore[attr-defined]
        assert np.isfinite(auc)
    finally:
        session = run.parties["bank"].context.tee
        assert session is not None
        session.close()


def _only_authorised_clients_get_predictions(ctx: StepContext) -> None:
    """The served model admits the label holder's key only: unsigned, stranger-signed or tampered
    requests are refused inside the enclave (asked of one instance directly, no failover)."""
    assert ctx.tee is not None and isinstance(ctx.model, TeeModel)
    client, model_id, owner = ctx.tee.client, ctx.model.model_id, ctx.tee.signer
    ep, iid, _ = client.routes(fresh=True)[0]
    key = client.attest(ep, iid)
    x = np.zeros((1, 30))  # breast: 10 guest + 20 host features

    def ask(signer: Ed25519PrivateKey | None, sent: np.ndarray, signed: np.ndarray) -> Any:
        resp_pk = x25519_public(X25519PrivateKey.generate())
        req: dict[str, Any] = {"model_id": model_id, "x": sent, "resp_pk": resp_pk}
        if signer is not None:
            req["client_pk"] = signer.public_key().public_bytes_raw().hex()
            req["sig"] = signer.sign(predict_digest(model_id, {**req, "x": signed}))
        ct = HPKE_SUITE.encrypt(encode(req), key.public_key, info=b"sml-predict")
        return call_endpoint(ep, {"op": "call", "instance": iid, "method": "predict", "arg": ct})

    for signer in (None, Ed25519PrivateKey.generate()):
        with pytest.raises(ProtocolError, match="authorised client"):
            ask(signer, x, x)
    with pytest.raises(ProtocolError, match="signature does not verify"):
        ask(owner, x + 1, x)  # the owner's signature over other features
    with pytest.raises(ProtocolError, match="30 features"):
        ask(owner, x[:, :10], x[:, :10])  # a malformed request is refused, the enclave lives on
    assert isinstance(ask(owner, x, x), bytes)  # the label holder's own key is admitted


def test_tee_steps_require_engine_tee(parties: dict[str, tuple[str, object]], tmp_path: Path) -> None:
    with pytest.raises(PartyFailed, match="engine: tee"):
        run_steps(parties, [("tee_upload", TeeUploadParams())], tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tee_train.model"):
        TeeTrainParams(model="svm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="memory_cap_mb"):
        TeeTrainParams(memory_cap_mb=0)
