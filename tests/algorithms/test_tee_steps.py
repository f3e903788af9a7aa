"""The TEE job steps in-process (parties as threads over the in-memory link; enclaves are processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.evaluation import EvaluateParams
from sharelearn.algorithms.tee.steps import TeeServeParams, TeeTrainParams, TeeUploadParams, tee_baseline
from sharelearn.core.errors import ConfigError, PartyFailed
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
    state = {p: {"engine": "tee"} for p in parties}
    run = run_steps(parties, steps, tmp_path, state=state, timeout=150)  # type: ignore[arg-type]
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
        # the envelopes on storage hold no plaintext ids
        raw = Path(bank["tee_upload"]["envelope"]).read_bytes()
        assert str(parties["bank"][1].ids[0]).encode() + b"," not in raw  # type: ignore[attr-defined]
        assert np.isfinite(auc)
    finally:
        run.parties["bank"].state["tee_host"].close()
        run.parties["bank"].state["tee_cm"].close()


def test_tee_steps_require_engine_tee(parties: dict[str, tuple[str, object]], tmp_path: Path) -> None:
    with pytest.raises(PartyFailed, match="engine: tee"):
        run_steps(parties, [("tee_upload", TeeUploadParams())], tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tee_train.model"):
        TeeTrainParams(model="svm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="memory_cap_mb"):
        TeeTrainParams(memory_cap_mb=0)
