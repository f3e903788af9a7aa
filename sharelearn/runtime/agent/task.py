"""One job at one worker: its party's `sharelearn node` process, driven like the local launcher does.

The worker writes the job file into the job's own folder (its party's data path resolved inside
the worker's data folder: a job may not read a file outside it), starts the node in its own process
group (killed if the worker dies), relays the node's control events and log lines, hands it its
peers' addresses, and kills the whole group on cancel. The revocation list the coordinator sends
with each task is written next to the job and checked by the node on every data-plane link. The
node checkpoints each step in its party folder; `rerun --from-step S` points the new attempt's node
at the original job's latest attempt there, so only S and later steps run. Outputs stay under
`<work>/jobs/<job_id>/attempt-<n>/`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from sharelearn.core.errors import ConfigError
from sharelearn.core.fileio import atomic_write_text
from sharelearn.runtime.control import Listening, event_from_json
from sharelearn.runtime.coordinator.jobs import strip_coordinator_keys

__all__ = ["TaskRun", "prepare_job"]

_PR_SET_PDEATHSIG = 1
_LOG_LINE_CAP = 400


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def prepare_job(spec: str, party: str, data_dir: Path, folder: Path) -> Path:
    """Write the job for this worker: its party's data path resolved inside `data_dir`."""
    text, _ = strip_coordinator_keys(spec)
    doc = yaml.safe_load(text)
    mine = (doc.get("parties") or {}).get(party)
    if not isinstance(mine, dict):
        raise ConfigError(f"job: party {party!r} is not in it")
    data = mine.get("data")
    if data is not None:
        data = {"path": data} if isinstance(data, str) else dict(data)
        root = data_dir.resolve()
        path = (root / str(data.get("path", ""))).resolve()
        if not path.is_relative_to(root):
            raise ConfigError(
                f"job: party {party}'s data path {data.get('path')!r} leaves the worker's data folder {root}"
            )
        data["path"] = str(path)
        mine["data"] = data
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(folder / "job.yaml", yaml.safe_dump(doc, sort_keys=False))


class TaskRun:
    """The node process of one attempt of one job, and the events it has not yet reported."""

    def __init__(
        self,
        assignment: dict[str, Any],
        party: str,
        data_dir: Path,
        work_dir: Path,
        certs: Path,
        listen_host: str,
    ) -> None:
        self.job_id, self.attempt = str(assignment["job_id"]), int(assignment["attempt"])
        self.party, self.listen_host = party, listen_host
        self.folder = work_dir / "jobs" / self.job_id / f"attempt-{self.attempt}"
        self.outbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.finished = threading.Event()
        self.peers_sent = False
        self.proc: subprocess.Popen[str] | None = None
        self.outbox.put({"event": "accepted"})
        try:
            job_file = prepare_job(str(assignment["spec"]), party, data_dir, self.folder)
            crl = atomic_write_text(
                self.folder / "crl.json", json.dumps({"revoked_serials": list(assignment.get("crl", []))})
            )
            resume = self._resume_args(assignment, work_dir)
            self._start(job_file, certs, str(assignment["run_id"]), crl, resume)
        except (ConfigError, OSError) as exc:
            self.outbox.put({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
            self.finished.set()

    @property
    def key(self) -> str:
        return f"{self.job_id}#{self.attempt}"

    def _resume_args(self, assignment: dict[str, Any], work_dir: Path) -> list[str]:
        """`rerun --from-step S`: the node restores the original job's latest attempt's checkpoints."""
        step, parent = str(assignment.get("from_step") or ""), str(assignment.get("parent_id") or "")
        if not step or not parent:
            return []
        attempts = sorted(
            (work_dir / "jobs" / parent).glob("attempt-*"), key=lambda p: int(p.name.split("-")[1])
        )
        done = [a for a in attempts if (a / "parties" / self.party / "checkpoint").is_dir()]
        if not done:
            raise ConfigError(
                f"rerun of job {parent} from step {step!r}: {work_dir / 'jobs' / parent} holds no "
                f"checkpoint of {self.party}'s earlier steps"
            )
        return ["--from-step", step, "--resume-from", str(done[-1] / "parties" / self.party)]

    def _start(self, job_file: Path, certs: Path, run_id: str, crl: Path, resume: list[str]) -> None:
        cmd = [
            sys.executable,
            "-m",
            "sharelearn",
            "node",
            "--job",
            str(job_file),
            "--party",
            self.party,
            "--certs",
            str(certs),
            "--report-dir",
            str(self.folder),
            "--control",
            "stdio",
            "--listen",
            f"{self.listen_host}:0",
            "--run-id",
            run_id,
            "--crl",
            str(crl),
            "--checkpoint",
            *resume,
        ]
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._pump_logs, daemon=True).start()
        threading.Thread(target=self._pump_events, daemon=True).start()

    def _pump_events(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None  # invariant: started with pipes
        final = False
        for line in self.proc.stdout:
            event = event_from_json(line, self.party)
            if event is None:
                continue
            doc = {"event": event.KIND, **dataclasses.asdict(event)}
            if isinstance(event, Listening):
                doc["address"] = f"{self.listen_host}:{event.port}"
            final = final or doc["event"] in ("done", "error")
            self.outbox.put(doc)
        code = self.proc.wait()
        if not final:
            self.outbox.put(
                {"event": "error", "error": f"the node process exited with code {code} before finishing"}
            )
        self.finished.set()

    def _pump_logs(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None  # invariant: started with pipes
        with open(self.folder / "node.log", "a") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                self.outbox.put({"event": "log", "line": line.rstrip()[:_LOG_LINE_CAP]})

    def give_peers(self, peers: dict[str, str]) -> None:
        """Tell the node where its peers listen (once)."""
        if self.peers_sent or self.proc is None or self.proc.stdin is None:
            return
        self.peers_sent = True
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(json.dumps({"peers": peers}) + "\n")
            self.proc.stdin.flush()

    def kill(self) -> None:
        """Stop the node's whole process group (cancel, or the worker is shutting down)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                out.append(self.outbox.get_nowait())
            except queue.Empty:
                return out
