"""`sharelearn bench platform`: the demo job through coordinator + workers vs the local launcher.

Measured in the same run, on the same machine and job (the embedded demo, `--epochs` and
`--key-bits` to shrink it): wall time of the local launcher (`sharelearn run`) and of the same job
through a coordinator and one worker per party (submit to final state; the services are already
up, as in production), submit-to-first-task latency (the coordinator receiving a worker's
`accepted` event), and `--queue N` small PSI jobs submitted at once: how long until all are final,
and whether any is left in a non-final state. Targets (issue 18): platform/launcher <= 1.2x and at
most 1 s added; first task <= 0.5 s; no stuck job.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sharelearn.algorithms.registry import step_params
from sharelearn.interfaces.api import demo_job_path, run_job
from sharelearn.runtime.coordinator.local import LocalPlatform
from sharelearn.runtime.jobspec import load_job

_PSI = "job: bench-queue\nparties:\n{parties}steps:\n  - psi: {{}}\n"


def _demo(folder: Path, epochs: int, key_bits: int) -> Path:
    text = demo_job_path().read_text()
    text = re.sub(r"epochs: \d+", f"epochs: {epochs}", text)
    text = re.sub(r"key_bits: \d+", f"key_bits: {key_bits}", text)
    for csv in demo_job_path().parent.glob("*.csv"):
        shutil.copy(csv, folder / csv.name)
    job = folder / "demo.yaml"
    job.write_text(text)
    return job


def _first_task_s(local: LocalPlatform, job_id: str, submitted: float) -> float:
    with local.admin as client:
        events = client.get(f"/api/v1/jobs/{job_id}/logs").json()
    accepted = [e["at"] for e in events if e["kind"] == "accepted"]
    return round(min(accepted) - submitted, 4) if accepted else float("nan")


def _queue(local: LocalPlatform, folder: Path, n: int) -> dict[str, Any]:
    demo = load_job(_demo(folder, 1, 1024), step_params=step_params())
    lines = "".join(
        f"  {p.name}: {{role: {p.role}"
        + (f", data: {{path: {p.data.path.name}, id: id}}" if p.data else "")
        + "}\n"
        for p in demo.parties.values()
        if p.data is not None
    )
    started = time.perf_counter()
    ids = [local.submit(_PSI.format(parties=lines)) for _ in range(n)]
    states = [local.wait(j, timeout=60 + 30 * n, poll_s=0.2)["state"] for j in ids]
    return {
        "queued_jobs": n,
        "queue_s": round(time.perf_counter() - started, 2),
        "queue_succeeded": states.count("succeeded"),
        "queue_stuck": sum(s not in ("succeeded", "failed", "cancelled") for s in states),
    }


def run(epochs: int, key_bits: int, queue: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        folder = Path(tmp)
        job = _demo(folder, epochs, key_bits)
        t = time.perf_counter()
        local_summary = run_job(job, report_dir=folder / "report", audit=False)
        launcher_s = time.perf_counter() - t
        platform = LocalPlatform(folder / "platform")
        platform.start(load_job(job, step_params=step_params()))
        try:
            submitted = time.time()
            t = time.perf_counter()
            job_id = platform.submit(job.read_text())
            done = platform.wait(job_id, poll_s=0.02)
            platform_s = time.perf_counter() - t
            result = {
                "launcher_s": round(launcher_s, 3),
                "launcher_status": local_summary["status"],
                "platform_s": round(platform_s, 3),
                "platform_state": done["state"],
                "ratio": round(platform_s / launcher_s, 3),
                "added_s": round(platform_s - launcher_s, 3),
                "submit_to_first_task_s": _first_task_s(platform, job_id, submitted),
            }
            if queue:
                result.update(_queue(platform, folder, queue))
        finally:
            platform.stop()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench platform", description=__doc__)
    parser.add_argument("--epochs", type=int, default=20, help="hetero_lr epochs of the demo job")
    parser.add_argument("--key-bits", type=int, default=2048, help="Paillier key size of the demo job")
    parser.add_argument("--queue", type=int, default=100, help="small PSI jobs queued at once (0: skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(args.epochs, args.key_bits, args.queue)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    ok = result["platform_state"] == "succeeded" and result.get("queue_stuck", 0) == 0
    return 0 if ok else 1
