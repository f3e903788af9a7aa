"""`sharelearn bench dashboard`: every dashboard page with `--jobs` (1,000) jobs in the store.

The store is filled the way workers fill it: each job has 3 parties x 3 steps of tasks, a summary
with psi / hetero_lr / evaluate outputs (loss history, ROC points), per-peer traffic, log events and
a registered model. Pages are fetched over HTTP from a real uvicorn server on loopback (warm: each
page once before timing), the median of `--repeat` fetches is reported next to the baseline
measured in the same run: `/healthz` (no store access) and the REST `/api/v1/jobs` listing.
Target (issue 19): every page under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from benchmarks.common import print_result
from sharelearn.runtime.coordinator import CoordinatorOptions, open_coordinator
from sharelearn.runtime.coordinator.api import make_app
from sharelearn.runtime.coordinator.dashboard import mount_dashboard
from sharelearn.runtime.coordinator.models import Event, Job, ModelEntry, Party, Task

_SPEC = """job: bench-{i}
parties:
  bank:  {{role: guest, data: {{path: g.csv, id: id, label: y}}}}
  shop:  {{role: host, data: {{path: h.csv, id: id}}}}
  coord: {{role: arbiter}}
steps:
  - psi: {{}}
  - hetero_lr: {{epochs: 5, key_bits: 1024}}
  - evaluate: {{}}
"""
_PARTIES, _STEPS = ("bank", "shop", "coord"), ("psi", "hetero_lr", "evaluate")
_STATES = ("succeeded", "succeeded", "succeeded", "failed", "running", "awaiting_approval", "cancelled")


def _outputs() -> dict[str, Any]:
    grid = [round(1 - i / 50, 4) for i in range(51)]
    roc = {"threshold": grid, "tpr": [min(1.0, (1 - t) * 1.6) for t in grid], "fpr": [1 - t for t in grid]}
    return {
        "psi": {"intersection_size": 520},
        "hetero_lr": {"epochs_run": 5, "final_loss": 0.21},
        "evaluate": {
            "auc": 0.98,
            "ks": 0.9,
            "accuracy": 0.95,
            "history": {"loss": [0.6, 0.4, 0.3, 0.25, 0.21]},
            "roc": roc,
        },
    }


def _job(s: Any, i: int, now: float) -> None:
    job_id, state = secrets.token_hex(8), _STATES[i % len(_STATES)]
    outs = _outputs()
    summary = {"steps": outs, "wire": {"bytes": 123456}} if state == "succeeded" else {}
    s.add(
        Job(
            id=job_id,
            name=f"bench-{i}",
            spec=_SPEC.format(i=i),
            digest=secrets.token_hex(32),
            submitter="admin",
            parties=json.dumps(list(_PARTIES)),
            data_parties=json.dumps(["bank", "shop"]),
            state=state,
            attempt=1,
            retries=0,
            run_id=secrets.token_hex(16),
            summary=json.dumps(summary),
            error="party shop failed: DataError: /data/shop/h.csv: no column 'id'"
            if state == "failed"
            else "",
            created=now - 1000 + i,
            updated=now - 999 + i,
        )
    )
    s.flush()
    for k, step in enumerate(_STEPS):
        for p in _PARTIES:
            out = outs[step] if p == "bank" else {}
            s.add(
                Task(
                    id=f"{job_id}/{k}/{p}",
                    job_id=job_id,
                    step_index=k,
                    step=step,
                    party=p,
                    state="succeeded" if state == "succeeded" else "cancelled",
                    attempt=1,
                    outputs=json.dumps(out),
                )
            )
    for p in _PARTIES:
        for n in range(10):
            s.add(
                Event(
                    job_id=job_id,
                    party=p,
                    kind="log",
                    step="hetero_lr",
                    message=f"epoch {n}",
                    metrics=json.dumps({"attempt": 1}),
                    at=now,
                )
            )
        peers = {q: {"bytes_sent": 1000, "messages_sent": 10} for q in _PARTIES if q != p}
        s.add(
            Event(
                job_id=job_id,
                party=p,
                kind="done",
                step="",
                message="",
                metrics=json.dumps({"attempt": 1, "traffic": {"peers": peers}}),
                at=now,
            )
        )
    if state == "succeeded":
        s.add(
            ModelEntry(
                model_id=f"m{job_id}",
                version=1,
                job_id=job_id,
                step="hetero_lr",
                parties=json.dumps(list(_PARTIES)),
                lineage=json.dumps({"job": job_id}),
                created=now,
            )
        )


def _fill(state_dir: Path, n: int) -> tuple[Any, Any, list[str]]:
    dispatcher, identity = open_coordinator(CoordinatorOptions(state_dir))
    now = time.time()
    with dispatcher.session() as s:
        for p in _PARTIES:
            s.add(Party(name=p, last_heartbeat=now, enrolled=now))
        for i in range(n):
            _job(s, i, now)
    with dispatcher.session() as s:
        ids = [j.id for j in s.query(Job).order_by(Job.created.desc()).limit(n)]
    return dispatcher, identity, ids


def _serve(dispatcher: Any, identity: Any) -> tuple[str, uvicorn.Server]:
    app = make_app(dispatcher, identity)
    mount_dashboard(app, dispatcher, identity)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server


def _time(client: httpx.Client, path: str, repeat: int) -> float:
    r = client.get(path)
    if r.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.text[:300]}")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        client.get(path).raise_for_status()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench dashboard", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dispatcher, identity, ids = _fill(Path(tmp), args.jobs)
        url, server = _serve(dispatcher, identity)
        token = (Path(tmp) / "admin.token").read_text().strip()
        done, failed = ids[args.jobs % len(_STATES) == 0], ids[0]
        with dispatcher.session() as s:
            done = next(j.id for j in s.query(Job).filter(Job.state == "succeeded"))
            failed = next(j.id for j in s.query(Job).filter(Job.state == "failed"))
        pages = {
            "baseline /healthz": "/healthz",
            "baseline REST /api/v1/jobs": "/api/v1/jobs",
            "jobs list /": "/",
            "jobs list filtered": "/?state=failed&party=shop",
            "job page (succeeded)": f"/jobs/{done}",
            "job page (failed)": f"/jobs/{failed}",
            "wire": f"/jobs/{done}/wire",
            "approvals": "/approvals",
            "models": "/models",
            "parties": "/parties",
        }
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            result: dict[str, Any] = {"jobs_in_store": args.jobs, "target_ms": 300}
            result |= {f"{name} ms": _time(client, path, args.repeat) for name, path in pages.items()}
        server.should_exit = True
    pages_ms = [v for k, v in result.items() if k.endswith(" ms") and not k.startswith("baseline")]
    result["all pages under target"] = max(pages_ms) < 300
    print_result(result, args.json)
    return 0
