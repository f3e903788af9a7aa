"""The local launcher: every party of a job as its own OS process on loopback.

`launch(job_path)` makes fresh certificates, starts one `sharelearn node` process per party (each
in its own process group, killed if the launcher dies), tells each party where its peers listen,
relays their progress, and collects their outputs and traffic into a report folder. If any party
dies, errs or times out, every other party is stopped and the job fails naming that party and its
error. Nothing is left half-written: the summary is written atomically at the end, failed or not.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sharelearn.algorithms.registry import step_params
from sharelearn.algorithms.rolecheck import ROLE_CHECKS
from sharelearn.core.errors import PartyFailed, SharelearnError
from sharelearn.runtime.certs import init_certs
from sharelearn.runtime.control import ControlEvent, Exited, Listening, PartyDone, PartyError, event_from_json
from sharelearn.runtime.jobspec import JobSpec, load_job
from sharelearn.runtime.report import write_summary

__all__ = ["LaunchOptions", "launch"]

_STARTUP_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """Knobs of a local run."""

    report_dir: Path | None = None
    audit: bool = True
    timeout_s: float | None = None
    on_event: Callable[[ControlEvent], None] = field(default=lambda event: None)
    baseline: bool = True  # train the centralised references after the run (False: --no-baseline)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class _Party:
    name: str
    proc: subprocess.Popen[str]
    log_path: Path


def _spawn(
    job: JobSpec,
    name: str,
    certs: Path,
    report: Path,
    audit: bool,
    events: queue.Queue[ControlEvent],
    run_id: str,
) -> _Party:
    log_path = report / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "sharelearn",
        "node",
        "--job",
        str(job.path),
        "--party",
        name,
        "--certs",
        str(certs),
        "--report-dir",
        str(report),
        "--control",
        "stdio",
        "--run-id",
        run_id,
    ]
    if not audit:
        cmd.append("--no-audit")
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
    party = _Party(name, proc, log_path)

    def pump() -> None:
        assert proc.stdout is not None  # invariant: Popen was given stdout=PIPE
        for line in proc.stdout:
            event = event_from_json(line, name)
            if event is not None:
                events.put(event)
        events.put(Exited(name))

    threading.Thread(target=pump, name=f"pump-{name}", daemon=True).start()
    return party


def _stop_all(parties: dict[str, _Party]) -> None:
    for p in parties.values():
        if p.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    for p in parties.values():
        try:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()


def _last_log_line(party: _Party) -> str:
    try:
        lines = [ln for ln in party.log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class _Run:
    """The event loop of one launch: start-up handshake, progress relay, failure detection."""

    def __init__(self, job: JobSpec, options: LaunchOptions, report: Path, certs: Path) -> None:
        self.job, self.options, self.report = job, options, report
        self.events: queue.Queue[ControlEvent] = queue.Queue()
        run_id = secrets.token_hex(16)  # one per run: the parties derive their model ids from it
        self.parties = {
            name: _spawn(job, name, certs, report, options.audit, self.events, run_id) for name in job.parties
        }
        self.done: dict[str, PartyDone] = {}
        self.ports: dict[str, int] = {}

    def _failure(self, event: ControlEvent) -> PartyFailed | None:
        name = event.party
        if isinstance(event, PartyError):
            return PartyFailed(name, event.error)
        if isinstance(event, Exited) and name not in self.done:
            code = self.parties[name].proc.wait()
            detail = _last_log_line(self.parties[name])
            return PartyFailed(
                name, f"process exited with code {code} before finishing" + (f" ({detail})" if detail else "")
            )
        return None

    def _next(self, deadline: float | None, waiting_for: str) -> ControlEvent:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            pending = [p for p in self.parties if p not in self.done]
            raise PartyFailed(",".join(pending), f"timed out {waiting_for}")
        try:
            return self.events.get(timeout=remaining)
        except queue.Empty:
            pending = [p for p in self.parties if p not in self.done]
            raise PartyFailed(",".join(pending), f"timed out {waiting_for}") from None

    def handshake(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while len(self.ports) < len(self.parties):
            event = self._next(deadline, "while starting")
            failure = self._failure(event)
            if failure:
                raise failure
            if isinstance(event, Listening):
                self.ports[event.party] = event.port
            self.options.on_event(event)
        addresses = {p: f"127.0.0.1:{port}" for p, port in self.ports.items()}
        for p in self.parties.values():
            assert p.proc.stdin is not None  # invariant: Popen was given stdin=PIPE
            p.proc.stdin.write(json.dumps({"peers": addresses}) + "\n")
            p.proc.stdin.flush()

    def wait(self) -> None:
        deadline = None if self.options.timeout_s is None else time.monotonic() + self.options.timeout_s
        while len(self.done) < len(self.parties):
            event = self._next(deadline, "while running the job")
            failure = self._failure(event)
            if failure:
                raise failure
            if isinstance(event, PartyDone):
                self.done[event.party] = event
            self.options.on_event(event)
        for p in self.parties.values():
            p.proc.wait(30)


def _report_dir(job: JobSpec, wanted: Path | None) -> Path:
    if wanted is not None:  # absolute: every party process and the enclave host see the same folder
        wanted = wanted.expanduser().resolve()
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted
    base = Path(os.environ.get("SHARELEARN_HOME", Path.cwd())) / "reports"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=base))


def launch(job_path: Path | str, options: LaunchOptions = LaunchOptions()) -> dict[str, Any]:
    """Run a job locally, one process per party; return the summary (also in `report_dir/summary.json`).

    Raises nothing for a failed party: the summary says `"status": "failed"` and names it. Raises
    `ConfigError` when the job file itself is invalid (no party was started).
    """
    job = load_job(Path(job_path), step_params=step_params(), step_checks=ROLE_CHECKS)
    report = _report_dir(job, options.report_dir)
    started = time.perf_counter()
    error: SharelearnError | None = None
    run: _Run | None = None
    with tempfile.TemporaryDirectory(prefix="sharelearn-certs-") as certs:
        init_certs(list(job.parties), certs)
        try:
            run = _Run(job, options, report, Path(certs))
            run.handshake()
            run.wait()
        except SharelearnError as exc:
            error = exc
        except KeyboardInterrupt:
            error = PartyFailed("launcher", "interrupted")
        finally:
            if run is not None:
                _stop_all(run.parties)
    pids = {} if run is None else {name: p.proc.pid for name, p in run.parties.items()}
    done = {} if run is None else run.done
    elapsed = time.perf_counter() - started
    return write_summary(
        job, report, elapsed, error, pids, done, audit=options.audit, baseline=options.baseline
    )
