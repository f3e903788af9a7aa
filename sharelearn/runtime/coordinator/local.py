"""The embedded platform (`sharelearn up` / `down`, `sharelearn bench platform`): a coordinator and one
worker per party of a job on this machine, each its own process group, enrolled the real way (each
worker makes its own key and CSR and redeems a one-time token). Party folders are
`<root>/<party>/{data,certs}`; the CA key stays in `<root>/coordinator/ca`. `processes.json` lists
what was started so that `down` can stop it from another shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sharelearn.core.errors import ConfigError, PartyFailed
from sharelearn.core.fileio import atomic_write_json
from sharelearn.runtime.coordinator.auth import Identity
from sharelearn.runtime.coordinator.service import CoordinatorOptions, open_coordinator
from sharelearn.runtime.jobspec import JobSpec

__all__ = ["LocalPlatform", "stop_recorded"]

_FINAL = ("succeeded", "failed", "cancelled")


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_recorded(root: Path) -> list[int]:
    """Stop every process group `processes.json` in `root` lists; return their pids."""
    record = root / "processes.json"
    if not record.is_file():
        return []
    pids = [int(p) for p in json.loads(record.read_text()).values()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    record.unlink()
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, ValueError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


@dataclass
class LocalPlatform:
    """Processes of one embedded platform under `root`."""

    root: Path
    heartbeat_timeout_s: float = 10.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    url: str = ""

    def start(self, job: JobSpec, port: int = 0) -> str:
        """Start the coordinator and one worker per party of `job` (its data copied in)."""
        self.root.mkdir(parents=True, exist_ok=True)
        state = self.root / "coordinator"
        _, identity = open_coordinator(CoordinatorOptions(state))  # migrates and makes the CA before serving
        (state / "url").unlink(missing_ok=True)
        self.procs["coordinator"] = _spawn(
            [
                sys.executable,
                "-m",
                "sharelearn",
                "coordinator",
                "--state-dir",
                str(state),
                "--port",
                str(port),
                "--heartbeat-timeout",
                str(self.heartbeat_timeout_s),
            ],
            self.root / "coordinator.log",
        )
        self.url = self._wait_url(state)
        for party in job.parties.values():
            self._start_worker(job, party.name, identity)
        self._record()
        self.wait_parties(list(job.parties))
        return self.url

    def _wait_url(self, state: Path) -> str:
        deadline = time.monotonic() + 30
        while not (state / "url").is_file():
            if self.procs["coordinator"].poll() is not None or time.monotonic() > deadline:
                raise PartyFailed("coordinator", (self.root / "coordinator.log").read_text()[-2000:])
            time.sleep(0.05)
        url = (state / "url").read_text().strip()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz").status_code == 200:
                    return url
            time.sleep(0.05)

    def _start_worker(self, job: JobSpec, party: str, identity: Identity) -> None:
        home = self.root / party
        data = home / "data"
        data.mkdir(parents=True, exist_ok=True)
        spec = job.parties[party].data
        if spec is not None:
            shutil.copy(spec.path, data / spec.path.name)
        policy = home / "policy.yaml"
        policy.write_text("default: ask\nauto_approve:\n  - peers: [" + ", ".join(job.parties) + "]\n")
        cmd = [
            sys.executable,
            "-m",
            "sharelearn",
            "worker",
            "--coordinator",
            self.url,
            "--party",
            party,
            "--data-dir",
            str(data),
            "--certs",
            str(home / "certs"),
            "--policy",
            str(policy),
        ]
        if not (home / "certs" / f"{party}.token").is_file():
            cmd += ["--enroll-token", identity.enrollment_token(party, ttl_s=600)]
        self.procs[party] = _spawn(cmd, home / "worker.log")

    def _record(self) -> None:
        atomic_write_json(self.root / "processes.json", {n: p.pid for n, p in self.procs.items()})

    @property
    def admin(self) -> httpx.Client:
        token = (self.root / "coordinator" / "admin.token").read_text().strip()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def wait_parties(self, names: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.admin as client:
            while time.monotonic() < deadline:
                seen = {p["party"]: p["last_heartbeat"] for p in client.get("/api/v1/parties").json()}
                if all(time.time() - seen.get(n, 0.0) < 2 for n in names):
                    return
                time.sleep(0.05)
        raise PartyFailed(",".join(names), f"workers did not connect; see {self.root}/*/worker.log")

    def submit(self, text: str) -> str:
        with self.admin as client:
            r = client.post("/api/v1/jobs", content=text)
        if r.status_code != 200:
            raise ConfigError(f"submit: HTTP {r.status_code}: {r.text}")
        return str(r.json()["job_id"])

    def wait(self, job_id: str, timeout: float = 600, poll_s: float = 0.05) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.admin as client:
            while time.monotonic() < deadline:
                job = dict(client.get(f"/api/v1/jobs/{job_id}").json())
                if job["state"] in _FINAL:
                    return job
                time.sleep(poll_s)
        raise PartyFailed("coordinator", f"job {job_id} did not end in {timeout} s")

    def stop(self) -> None:
        stop_recorded(self.root)
