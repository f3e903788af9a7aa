"""`engine: tee` jobs across OS processes (launcher: one process per party over gRPC + mTLS).

No `tee:` block: the first party starts the embedded default (simulated platform, cluster
manager, enclave processes) and every output says SIMULATION. default_credit (30000 rows x 23
features, ~5.5 MB as float64) trains under a 2 MB enclave memory cap, so it must stream.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sharelearn.interfaces.api import run_job
from sharelearn.tee.cluster import control_call
from sharelearn.tee.control import ControlSigner
from sharelearn.testing.services import spawn_tee_service, stop_service

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(300)]
FATE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"


def _job(
    folder: Path,
    model: str,
    *,
    tee_block: str = "",
    serve: int = 0,
    data: str = "default_credit",
    cap: float = 2,
) -> Path:
    if not FATE.is_dir():
        pytest.skip(f"datasets not found at {FATE}")
    job = folder / f"tee_{model}.yaml"
    serve_step = f"  - tee_serve: {{instances: {serve}, requests: 30, concurrency: 3}}\n" if serve else ""
    guest, host = FATE / f"{data}_hetero_guest.csv", FATE / f"{data}_hetero_host.csv"
    job.write_text(
        f"job: tee-{model}\nengine: tee\ntimeout_s: 240\n{tee_block}parties:\n"
        f"  bank: {{role: guest, data: {{path: {guest}, id: id, label: y}}}}\n"
        f"  shop: {{role: host, data: {{path: {host}, id: id}}}}\n"
        f"steps:\n  - tee_upload: {{chunk_rows: {100 if data == 'breast' else 2048}}}\n"
        f"  - tee_train: {{model: {model}, num_trees: 30, max_depth: 3, memory_cap_mb: {cap}}}\n"
        "  - evaluate: {plots: false}\n" + serve_step
    )
    return job


@pytest.mark.parametrize("model", ["xgboost", "gbdt"])
def test_default_credit_in_enclave_matches_the_pooled_library(tmp_path: Path, model: str) -> None:
    summary = run_job(_job(tmp_path, model, serve=3 if model == "xgboost" else 0), report_dir=tmp_path / "r")

    assert summary["status"] == "success", summary["error"]
    steps = summary["steps"]
    train, evaluate = steps["tee_train"], steps["evaluate"]
    assert train["simulation"] is True and steps["tee_upload"]["simulation"] is True
    assert train["rows"] == 30000 and train["blocks"] > 1
    assert train["peak_bytes"] <= train["memory_cap_bytes"] == 2 << 20 < train["data_bytes"]
    assert evaluate["auc"] > 0.75
    assert abs(evaluate["auc_delta"]) <= 0.005, evaluate
    if model == "xgboost":
        serve = steps["tee_serve"]
        assert serve["instances"] == 3 and serve["failed"] == 0
        assert serve["max_abs_diff_vs_evaluate"] < 1e-6
    print(f"{model}: auc {evaluate['auc']} centralized {evaluate['auc_centralized']}", end=" ")
    print(f"delta {evaluate['auc_delta']}")


def test_tee_job_cli_says_simulation_and_refuses_a_bad_tee_block(tmp_path: Path) -> None:
    bad = _job(tmp_path, "lr", tee_block="tee: {cm: '127.0.0.1:1', mrenclave: nothex}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sharelearn", "run", str(bad), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "tee.mrenclave" in proc.stderr

    job = _job(tmp_path, "lr", data="breast", cap=0.05)  # 569 x 30 (~140 kB) under a 52 kB cap
    proc = subprocess.run(
        [sys.executable, "-m", "sharelearn", "run", str(job), "--json", "--report-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert "SIMULATION" in proc.stderr
    assert abs(summary["steps"]["evaluate"]["auc_delta"]) <= 0.005


def test_tee_block_points_the_job_at_a_running_cluster(tmp_path: Path) -> None:
    """`sharelearn tee cm` + `sharelearn tee host` already run; the job pins their build and root."""
    procs: list[subprocess.Popen[str]] = []
    try:
        admin = ControlSigner()
        cm_proc, cm = spawn_tee_service(["cm", "--admin-pk", admin.public], tmp_path / "cm.log")
        procs.append(cm_proc)
        host_args = ["host", "--cm", cm["cm"], "--workdir", str(tmp_path / "host")]
        host_proc, host = spawn_tee_service(
            [*host_args, "--instances", "2", "--cluster", "sharelearn-train"], tmp_path / "host.log"
        )
        procs.append(host_proc)
        control_call(cm["cm"], admin, {"op": "add_host", "pk": host["host_pk"]})
        block = (
            f"tee: {{cm: '{cm['cm']}', mrenclave: '{host['images']['v1']}', allow_simulation: true, "
            f"simulation_root: '{host['simulation_root']}'}}\n"
        )
        job = _job(tmp_path, "gbdt", tee_block=block, serve=2, data="breast", cap=0.05)
        summary = run_job(job, report_dir=tmp_path / "r")
        assert summary["status"] == "success", summary["error"]
        steps = summary["steps"]
        assert steps["tee_upload"]["mrenclave"] == host["images"]["v1"]
        assert steps["tee_train"]["simulation"] is True and abs(steps["evaluate"]["auc_delta"]) <= 0.005
        assert steps["tee_serve"]["instances"] == 2 and steps["tee_serve"]["failed"] == 0
    finally:
        for proc in reversed(procs):
            stop_service(proc)


def test_partial_overlap_is_inner_joined_in_the_enclave_with_a_relative_report_dir(tmp_path: Path) -> None:
    """Each party has rows the other lacks; the enclave trains on the inner join and says its size."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    ids = [f"p{i}" for i in range(len(y))]
    cols = [f"f{k}" for k in range(x.shape[1])]
    guest_rows, host_rows = range(0, 450), range(100, len(y))  # 350 rows in common

    def write(name: str, rows: range, feats: range, label: bool) -> None:
        head = ["id", *(cols[k] for k in feats), *(["y"] if label else [])]
        lines = [",".join(head)]
        for i in rows:
            vals = [ids[i], *(repr(float(x[i, k])) for k in feats), *([str(int(y[i]))] if label else [])]
            lines.append(",".join(vals))
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")

    write("bank", guest_rows, range(0, 15), True)
    write("shop", host_rows, range(15, 30), False)
    job = tmp_path / "partial.yaml"
    job.write_text(
        "job: tee-partial\nengine: tee\ntimeout_s: 240\nparties:\n"
        "  bank: {role: guest, data: {path: bank.csv, id: id, label: y}}\n"
        "  shop: {role: host, data: {path: shop.csv, id: id}}\n"
        "steps:\n  - tee_upload: {chunk_rows: 64}\n"
        "  - tee_train: {model: lr, memory_cap_mb: 1}\n  - evaluate: {plots: false}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "sharelearn", "run", "partial.yaml", "--json", "--report-dir", "reports"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads(proc.stdout)["steps"]
    train, evaluate = steps["tee_train"], steps["evaluate"]
    assert train["joined_rows"] == train["rows"] == 350
    assert train["party_rows"] == {"bank": 450, "shop": 469}
    assert evaluate["rows"] == 350 and evaluate["auc"] > 0.95  # scored on the joined rows only
    assert (tmp_path / "reports").is_dir()
