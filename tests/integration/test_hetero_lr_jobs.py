"""hetero_lr across OS processes over gRPC + mutual TLS, through the launcher (`sharelearn run`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharelearn.core.audit import WireAudit
from sharelearn.interfaces.api import run_job
from sharelearn.runtime.control import ControlEvent, Progress

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(300)]

FATE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"


def _job(folder: Path, parties: str, steps: str, name: str = "lr") -> Path:
    job = folder / f"{name}.yaml"
    job.write_text(f"job: {name}\ntimeout_s: 120\nparties:\n{parties}steps:\n{steps}")
    return job


def _audit(report: Path) -> WireAudit:
    audit = WireAudit()
    for path in sorted((report / "parties").glob("*/audit.msgpack")):
        audit.merge(WireAudit.load(path))
    return audit


def _features(path: Path) -> list[float]:
    x = pd.read_csv(path).drop(columns=["id", "y"], errors="ignore").to_numpy(dtype=np.float64).ravel()
    return [float(v) for v in np.unique(x) if abs(v * 1024 - round(v * 1024)) > 1e-9]


def test_breast_arbiter_mode_matches_sklearn_and_leaks_nothing(tmp_path: Path) -> None:
    guest, host = FATE / "breast_hetero_guest.csv", FATE / "breast_hetero_host.csv"
    job = _job(
        tmp_path,
        f"  bank: {{role: guest, data: {{path: {guest}, id: id, label: y}}}}\n"
        f"  shop: {{role: host, data: {{path: {host}, id: id}}}}\n"
        "  coord: {role: arbiter}\n",
        "  - psi: {}\n"
        "  - hetero_lr: {epochs: 10, batch_size: 64, key_bits: 1024, seed: 3}\n"
        "  - evaluate: {}\n",
    )
    events: list[ControlEvent] = []
    summary = run_job(job, report_dir=tmp_path / "report", on_event=events.append)

    assert summary["status"] == "success", summary["error"]
    ev = summary["steps"]["evaluate"]
    assert ev["auc"] > 0.98 and ev["auc_delta"] <= 0.01, ev
    assert set(ev) >= {"auc", "auc_centralized", "auc_delta", "ks", "accuracy"}
    assert sorted(summary["plots"]) == ["loss_curve.png", "roc.png"]
    assert (tmp_path / "report" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    epochs = [e for e in events if isinstance(e, Progress) and e.step == "hetero_lr"]
    assert {e.party for e in epochs} == {"bank", "shop", "coord"}  # live progress per epoch
    assert summary["wire"]["leaks"] == 0
    audit = _audit(tmp_path / "report")
    assert audit.count_leaks("shop", _features(guest)) == 0
    assert audit.count_leaks("coord", _features(guest) + _features(host)) == 0
    assert audit.count_leaks("bank", _features(host)) == 0
    # each party saved only its own part
    for party in ("bank", "shop"):
        assert (tmp_path / "report" / "parties" / party / "models" / "hetero_lr.model").is_file()


def test_two_party_ou_then_a_later_predict_job_loads_each_partys_model(tmp_path: Path) -> None:
    guest, host = FATE / "breast_hetero_guest.csv", FATE / "breast_hetero_host.csv"
    parties = (
        f"  bank: {{role: guest, data: {{path: {guest}, id: id, label: y}}}}\n"
        f"  shop: {{role: host, data: {{path: {host}, id: id}}}}\n"
    )
    train = _job(
        tmp_path,
        parties,
        "  - psi: {}\n  - hetero_lr: {mode: two_party, he_scheme: ou, key_bits: 1024, epochs: 8,"
        " batch_size: 128}\n  - evaluate: {}\n",
        "train",
    )
    summary = run_job(train, report_dir=tmp_path / "train")
    assert summary["status"] == "success", summary["error"]
    assert summary["steps"]["evaluate"]["auc_delta"] <= 0.01
    model = tmp_path / "train" / "parties" / "{party}" / "models" / "hetero_lr.model"
    predict = _job(
        tmp_path,
        parties,
        f"  - psi: {{}}\n  - predict: {{step: hetero_lr, model: '{model}'}}\n  - evaluate: {{}}\n",
        "p",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sharelearn",
            "run",
            str(predict),
            "--json",
            "--report-dir",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    later = json.loads(proc.stdout)
    assert later["steps"]["predict"]["predicted_rows"] == 569
    assert later["steps"]["evaluate"]["auc"] == pytest.approx(summary["steps"]["evaluate"]["auc"], abs=1e-9)
    scores = pd.read_csv(tmp_path / "p" / "parties" / "bank" / "predictions.csv")
    assert len(scores) == 569 and scores["score"].between(0, 1).all()
    assert not (tmp_path / "p" / "parties" / "shop" / "predictions.csv").exists()


def test_default_credit_guest_and_two_hosts(tmp_path: Path) -> None:
    rows = 3000  # a slice keeps CI fast; `sharelearn bench hetero-lr` runs the full 30,000 rows
    guest = pd.read_csv(FATE / "default_credit_hetero_guest.csv").head(rows)
    host = pd.read_csv(FATE / "default_credit_hetero_host.csv").head(rows)
    cols = [c for c in host.columns if c != "id"]
    guest.to_csv(tmp_path / "guest.csv", index=False)
    host[["id", *cols[:5]]].to_csv(tmp_path / "h1.csv", index=False)
    host[["id", *cols[5:]]].to_csv(tmp_path / "h2.csv", index=False)
    job = _job(
        tmp_path,
        "  bank: {role: guest, data: {path: guest.csv, id: id, label: y}}\n"
        "  shop1: {role: host, data: {path: h1.csv, id: id}}\n"
        "  shop2: {role: host, data: {path: h2.csv, id: id}}\n"
        "  coord: {role: arbiter}\n",
        "  - psi: {}\n"
        "  - hetero_lr: {epochs: 4, batch_size: 512, he_scheme: ou, key_bits: 1024}\n"
        "  - evaluate: {}\n",
    )
    summary = run_job(job, report_dir=tmp_path / "report")
    assert summary["status"] == "success", summary["error"]
    ev = summary["steps"]["evaluate"]
    assert ev["auc"] > 0.65 and ev["auc_delta"] <= 0.02, ev
    parts = summary["steps"]["hetero_lr"]["parties"]
    assert (
        parts["shop1"]["features"] == 5
        and parts["shop2"]["features"] == 5
        and parts["bank"]["features"] == 13
    )
