from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sharelearn.interfaces.api import run_job

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(600)]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"


def _job(folder: Path, name: str, clients: tuple[str, ...], step: str) -> Path:
    lines = [
        f"job: fedavg-{name}",
        "timeout_s: 300",
        "parties:",
        f"  agg: {{role: server, data: {{path: {DATA / f'{name}_test.csv'}, id: id, label: y}}}}",
    ]
    lines += [
        f"  {c}: {{role: client, data: {{path: {DATA / f'{name}_{c}.csv'}, id: id, label: y}}}}"
        for c in clients
    ]
    lines += ["steps:", f"  - fedavg: {step}", "  - evaluate: {}"]
    job = folder / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    return job


def _run(tmp_path: Path, name: str, clients: tuple[str, ...], step: str) -> dict[str, Any]:
    summary = run_job(_job(tmp_path, name, clients, step), report_dir=tmp_path / "report")
    assert summary["status"] == "success", summary["error"]
    pids = {p["pid"] for p in summary["parties"].values()}
    assert len(pids) == len(clients) + 1 and os.getpid() not in pids
    return summary


def test_breast_homo_with_secure_aggregation_across_processes_matches_central(tmp_path: Path) -> None:
    summary = _run(
        tmp_path,
        "breast_homo",
        ("guest", "host"),
        "{model: logistic, rounds: 10, learning_rate: 0.1, batch_size: 64, secure_aggregation: true}",
    )

    ev, fed = summary["steps"]["evaluate"], summary["steps"]["fedavg"]
    assert fed["secure_aggregation"] is True and fed["clients"] == 2
    assert ev["auc"] > 0.97 and ev["auc_delta"] <= 0.01, ev
    assert len(ev["history"]["test_auc"]) == 10
    assert (tmp_path / "report" / "loss_curve.png").is_file() and (tmp_path / "report" / "roc.png").is_file()
    assert summary["wire"]["leaks"] == 0


def test_default_credit_homo_three_clients_across_processes_matches_central(tmp_path: Path) -> None:
    summary = _run(
        tmp_path,
        "default_credit_homo",
        ("guest", "host_1", "host_2"),
        "{model: logistic, rounds: 10, learning_rate: 0.05, secure_aggregation: true}",
    )

    ev = summary["steps"]["evaluate"]
    assert ev["auc"] > 0.7 and ev["auc_delta"] <= 0.01, ev
    assert summary["steps"]["fedavg"]["clients"] == 3


@pytest.mark.slow  # 200 rounds x 2 local epochs of an MLP with secure aggregation: minutes
def test_vehicle_scale_homo_mlp_across_processes_is_close_to_central(tmp_path: Path) -> None:
    summary = _run(
        tmp_path,
        "vehicle_scale_homo",
        ("guest", "host"),
        "{model: mlp, hidden: [64], rounds: 200, local_epochs: 2, optimizer: adam, learning_rate: 0.01, "
        "batch_size: 32, secure_aggregation: true}",
    )

    ev = summary["steps"]["evaluate"]
    assert ev["task"] == "multiclass" and ev["accuracy"] > 0.85
    assert ev["accuracy_delta"] <= 0.02, ev
