"""Faults with real processes: a worker killed mid-job, a coordinator restarted mid-job, a queue."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from harness import DEMO_JOB, Platform

PSI_JOB = """\
job: platform-psi-%(n)d
parties:
  bank: {role: guest, data: {path: breast_hetero_guest.csv, id: id, label: y}}
  shop: {role: host, data: {path: breast_hetero_host.csv, id: id}}
  coord: {role: arbiter}
steps:
  - psi: {}
"""


def _start_all(platform: Platform) -> None:
    for i, party in enumerate(("bank", "shop", "coord")):
        platform.start_worker(party, i)
    platform.wait_parties(["bank", "shop", "coord"])


def _wait_step_running(platform: Platform, job_id: str, step: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = platform.job(job_id).get("tasks", {})
        if any(
            k.endswith(step) and all(t["state"] == "running" for t in v.values()) for k, v in tasks.items()
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{step} never ran: " + platform.logs())


def _processes_under(root: Path) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(root) in cmd and " node " in cmd:
                found.append(f"{pid}: {cmd[:200]}")
    return found


def test_worker_killed_mid_job_fails_it_naming_the_party(platform: Platform) -> None:
    _start_all(platform)
    job_id = platform.submit(DEMO_JOB % {"epochs": 200})
    _wait_step_running(platform, job_id, "hetero_lr")
    platform.workers["shop"].send_signal(signal.SIGKILL)
    job = platform.wait(job_id, timeout=60)
    assert job["state"] == "failed", job
    assert "shop" in job["error"], job["error"]
    tasks = job["tasks"]["1:hetero_lr"]
    assert tasks["shop"]["state"] == "failed" or "shop" in job["error"]
    assert {t["state"] for t in tasks.values()} <= {"failed", "cancelled"}
    deadline = time.monotonic() + 15
    while _processes_under(platform.root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_under(platform.root) == []  # no orphan node process at any party
    # the surviving workers take the next job: other jobs are unaffected
    platform.start_worker("shop", 1)
    platform.wait_parties(["shop"])
    assert platform.wait(platform.submit(PSI_JOB % {"n": 0}), timeout=90)["state"] == "succeeded"


def test_coordinator_restart_mid_job_reconciles(platform: Platform) -> None:
    _start_all(platform)
    job_id = platform.submit(DEMO_JOB % {"epochs": 30})
    _wait_step_running(platform, job_id, "hetero_lr")
    assert platform.coordinator is not None
    platform.coordinator.send_signal(signal.SIGKILL)
    platform.coordinator.wait()
    time.sleep(1.0)
    platform.start_coordinator()  # same state folder and port: the workers reconnect by themselves
    job = platform.wait(job_id, timeout=120)
    assert job["state"] == "succeeded", (job, platform.logs())
    assert job["metrics"]["evaluate"]["auc"] > 0.9


@pytest.mark.timeout(900)  # 60 node processes: minutes on a loaded 2-core machine
def test_twenty_jobs_back_to_back_all_end(platform: Platform) -> None:
    _start_all(platform)
    ids = [platform.submit(PSI_JOB % {"n": n}) for n in range(20)]
    states = [platform.wait(job_id, timeout=240)["state"] for job_id in ids]
    assert states == ["succeeded"] * 20
    finished = [platform.job(j)["updated"] for j in ids]
    assert finished == sorted(finished)  # one job after another, in submission order


def test_rerun_from_a_step_reuses_the_earlier_steps_outputs(platform: Platform) -> None:
    """psi and hetero_lr are restored from each worker's checkpoints of the original job; only
    evaluate runs again, on the very model the original trained (same AUC to the last digit)."""
    _start_all(platform)
    first = platform.wait(platform.submit(DEMO_JOB % {"epochs": 2}), timeout=180)
    assert first["state"] == "succeeded", first.get("error")
    r = platform.admin.post(f"/api/v1/jobs/{first['job_id']}/rerun", json={"from_step": "evaluate"})
    assert r.status_code == 200, r.text
    again = platform.wait(r.json()["job_id"], timeout=180)
    assert again["state"] == "succeeded", again.get("error")
    for key in ("0:psi", "1:hetero_lr"):
        for party, task in again["tasks"][key].items():
            assert task["outputs"]["reused"] is True, (key, party, task)
            assert task["outputs"]["elapsed_s"] == 0
            old = dict(first["tasks"][key][party]["outputs"])
            assert {k: v for k, v in task["outputs"].items() if k not in ("reused", "elapsed_s")} == {
                k: v for k, v in old.items() if k != "elapsed_s"
            }
    new_eval, old_eval = (
        again["tasks"]["2:evaluate"]["bank"]["outputs"],
        first["tasks"]["2:evaluate"]["bank"]["outputs"],
    )
    assert "reused" not in new_eval and new_eval["auc"] == old_eval["auc"]
    # the rerun's attempt folder at each data party checkpointed only the step it ran
    for party in ("bank", "shop"):
        attempt = platform.data_dir(party) / ".sharelearn" / "jobs" / again["job_id"] / "attempt-1"
        ran = sorted(p.name for p in (attempt / "parties" / party / "checkpoint").iterdir())
        assert ran == ["after-2"], ran
