"""The local launcher: every party of a job as its own OS process on loopback.

`launch(job_path)` makes fresh certificates, starts one `sharelearn node` process per party (each
in its own process group, killed if the launcher dies), tells each party where its peers listen,
relays their progress, and collects their outputs and traffic into a report folder. A TEE job with
no `tee:` block runs on the embedded simulated cluster, which the launcher starts in its own
process before the parties and stops after them: it admits the leader's control key and sends the
leader its address with the peers (`algorithms.tee.embedded`). If any party
dies, errs, hangs or times out, every other party is stopped and the job fails naming the party
that failed *first*: a party that was killed or stopped (SIGSTOP: its /proc state is `T`) is blamed
rather than the peer whose receive timed out waiting for it. Nothing is left half-written: the
summary is written atomically at the end, failed or not — also when the launcher gets SIGTERM or
SIGINT (exit 143 / 130). The certificates (the throwaway CA key and every party's key) live in a
private folder that is deleted on every way out, even SIGKILL (see `certs.throwaway_certs`).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sharelearn.algorithms.registry import step_params
from sharelearn.algorithms.rolecheck import ROLE_CHECKS
from sharelearn.algorithms.tee.embedded import EmbeddedCluster, needs_embedded
from sharelearn.core.errors import PartyFailed, SharelearnError
from sharelearn.core.fileio import TMP_GLOB
from sharelearn.runtime.certs import throwaway_certs
from sharelearn.runtime.control import (
    ControlEvent,
    Exited,
    Listening,
    PartyDone,
    PartyError,
    StepDone,
    event_from_json,
    exit_code_for,
)
from sharelearn.runtime.jobspec import JobSpec, load_job
from sharelearn.runtime.report import audit_mode, write_summary

__all__ = ["LaunchOptions", "launch"]

_STARTUP_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.25  # how often the event loop looks at the parties' process states
_STOPPED_GRACE_S = 3.0  # a party stopped this long is hung (a job never stops its own parties)
_BLAME_GRACE_S = 1.0  # after an error, how long to look for a party that died or hung before it


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """Knobs of a local run."""

    report_dir: Path | None = None
    audit: bool | str = True  # "sample" (the CLI's default), "full" / True, "off" / False
    timeout_s: float | None = None
    on_event: Callable[[ControlEvent], None] = field(default=lambda event: None)
    baseline: bool = True  # train the centralised references after the run (False: --no-baseline)


class _Signalled(BaseException):
    """The launcher got SIGTERM or SIGINT: stop every party, write the summary, exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_raise() -> Iterator[list[bool]]:
    """Turn the first SIGTERM / SIGINT into `_Signalled` while `armed[0]`; later ones are ignored.

    The launcher disarms it before writing the summary, so cleanup and the summary always finish.
    """
    armed = [True]
    if threading.current_thread() is not threading.main_thread():
        yield armed
        return

    def handler(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise _Signalled(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield armed
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
    reported_error: bool = False  # set by the pump when the party sent a PartyError
    stopped_since: float | None = None


def _proc_state(pid: int) -> str:
    """The one-letter state of a process from /proc (`T`/`t`: stopped); "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2 :][:1]


def _spawn(
    job: JobSpec,
    name: str,
    certs: Path,
    report: Path,
    audit: bool | str,
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
    if audit_mode(audit) == "off":
        cmd.append("--no-audit")
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log_file:
        with contextlib.suppress(OSError):  # a full disk leaves it empty: removed at the end
            log_file.write(f"# {name}: sharelearn node, started by launcher pid {os.getpid()}\n")
            log_file.flush()
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
            if isinstance(event, PartyError):
                party.reported_error = True
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
                os.killpg(p.proc.pid, signal.SIGCONT)  # a stopped party must run to handle SIGTERM
    deadline = time.monotonic() + 5.0
    for p in parties.values():
        try:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()


def _remove_leftovers(report: Path) -> None:
    """Delete what a party killed mid-write may have left: temp files and empty files."""
    for leftover in report.rglob(TMP_GLOB):
        leftover.unlink(missing_ok=True)
    for log_file in (report / "logs").glob("*.log"):
        with contextlib.suppress(OSError):
            if log_file.stat().st_size == 0:  # nothing was logged (or the disk was full): no 0-byte file
                log_file.unlink()


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
        self.certs = certs
        self.parties: dict[str, _Party] = {}
        self.done: dict[str, PartyDone] = {}
        self.ports: dict[str, int] = {}
        self.reported: dict[str, PartyError] = {}  # each party's own error report, if it sent one
        self.finished: dict[str, dict[str, Any]] = {name: {} for name in job.parties}  # step outputs
        self.tee: EmbeddedCluster | None = None  # the embedded TEE cluster started for the job

    def drain(self) -> None:
        """Record the step outputs still queued after the run stopped (a failure ends the loop early)."""
        with contextlib.suppress(queue.Empty):
            while True:
                event = self.events.get(timeout=0.2)
                if isinstance(event, StepDone):
                    self.finished[event.party][event.step] = event.outputs

    def finished_steps(self) -> dict[str, PartyDone]:
        """What every party finished, for the summary: its final report, or the steps it completed."""
        return {
            name: self.done.get(name) or PartyDone(name, steps, {}, self.parties[name].proc.pid, 0.0)
            for name, steps in self.finished.items()
            if name in self.done or steps
        }

    def outcome(self, failure: PartyFailed) -> tuple[int, str]:
        """The exit code and error type of a failed run: the failed party's own, when it reported."""
        report = self.reported.get(failure.party)
        if report is None or report.error not in failure.reason:
            return 1, type(failure).__name__
        return (report.exit_code if report.exit_code > 1 else 1), report.error.split(":", 1)[0]

    def _crashed(self, name: str) -> PartyFailed | None:
        """`name` died without reporting an error, or has been stopped too long; else None."""
        party = self.parties[name]
        code = party.proc.poll()
        if code not in (None, 0) and name not in self.done and (code < 0 or not party.reported_error):
            detail = _last_log_line(party)
            return PartyFailed(
                name, f"process exited with code {code} before finishing" + (f" ({detail})" if detail else "")
            )
        if code is None and _proc_state(party.proc.pid) in ("T", "t"):
            now = time.monotonic()
            party.stopped_since = party.stopped_since or now
            if now - party.stopped_since >= _STOPPED_GRACE_S:
                return PartyFailed(name, f"hung: its process {party.proc.pid} is stopped (SIGSTOP)")
        else:
            party.stopped_since = None
        return None

    def _root_cause(self, failure: PartyFailed) -> PartyFailed:
        """The party that failed first: one that died or hung, or else the one that reported."""
        deadline = time.monotonic() + _BLAME_GRACE_S
        while True:
            for name in self.parties:
                if name == failure.party:
                    continue
                stopped = _proc_state(self.parties[name].proc.pid) in ("T", "t")
                if stopped:  # blame at once: the others' errors are waiting on it
                    self.parties[name].stopped_since = time.monotonic() - _STOPPED_GRACE_S
                cause = self._crashed(name)
                if cause is not None:
                    return PartyFailed(cause.party, f"{cause.reason}; then {failure}")
            if time.monotonic() >= deadline:
                return failure
            time.sleep(0.05)

    def _failure(self, event: ControlEvent) -> PartyFailed | None:
        name = event.party
        if isinstance(event, PartyError):
            self.reported[name] = event
            return self._root_cause(PartyFailed(name, event.error))
        if isinstance(event, Exited) and name not in self.done:
            self.parties[name].proc.wait()
            cause = self._crashed(name)
            return self._root_cause(cause or PartyFailed(name, "process exited before finishing"))
        return None

    def _check_health(self) -> None:
        for name in self.parties:
            cause = self._crashed(name)
            if cause is not None:
                raise self._root_cause(cause)

    def _next(self, deadline: float | None, waiting_for: str) -> ControlEvent:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                pending = [p for p in self.parties if p not in self.done]
                raise self._root_cause(PartyFailed(",".join(pending), f"timed out {waiting_for}"))
            try:
                return self.events.get(timeout=_POLL_S if remaining is None else min(_POLL_S, remaining))
            except queue.Empty:
                self._check_health()

    def start_tee(self) -> None:
        """Start the embedded TEE cluster when the job needs one (closed by `close`)."""
        steps = [(s.name, s.params) for s in self.job.steps]
        params = None if self.job.engine != "tee" else needs_embedded(steps, self.job.tee, leader=True)
        if params is not None:
            leader = next(iter(self.job.parties))
            self.tee = EmbeddedCluster.start(
                self.report / "parties" / leader / "tee" / "bundle",
                cluster=params.cluster,
                instances=params.instances,
            )

    def close(self) -> None:
        """Stop every party, then the embedded cluster; keep what they reported."""
        try:
            _stop_all(self.parties)
            _remove_leftovers(self.report)
            self.drain()
        finally:
            if self.tee is not None:
                self.tee.close()

    def start(self) -> None:
        """Start every party; the ones started are in `parties` even if a signal stops this midway."""
        run_id = secrets.token_hex(16)  # one per run: the parties derive their model ids from it
        for name in self.job.parties:
            self.parties[name] = _spawn(
                self.job, name, self.certs, self.report, self.options.audit, self.events, run_id
            )

    def handshake(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while len(self.ports) < len(self.parties):
            event = self._next(deadline, "while starting")
            failure = self._failure(event)
            if failure:
                raise failure
            if isinstance(event, Listening):
                self.ports[event.party] = event.port
                leader = next(iter(self.job.parties))
                if self.tee is not None and event.tee_admin and event.party == leader:
                    self.tee.host.control.admit(event.tee_admin)  # only the leader may scale out
            self.options.on_event(event)
        addresses = {p: f"127.0.0.1:{port}" for p, port in self.ports.items()}
        leader = next(iter(self.job.parties))
        for name, p in self.parties.items():
            message: dict[str, Any] = {"peers": addresses}
            if self.tee is not None and name == leader:
                message["tee"] = self.tee.wire()
            assert p.proc.stdin is not None  # invariant: Popen was given stdin=PIPE
            p.proc.stdin.write(json.dumps(message) + "\n")
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
            if isinstance(event, StepDone):
                self.finished[event.party][event.step] = event.outputs
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

    Raises nothing for a failed party: the summary says `"status": "failed"`, names it, and gives
    the `exit_code` the CLI exits with. Raises `ConfigError` when the job file itself is invalid
    (no party was started).
    """
    job = load_job(Path(job_path), step_params=step_params(), step_checks=ROLE_CHECKS)
    audit_mode(options.audit)  # a bad mode is refused before anything starts
    report = _report_dir(job, options.report_dir)
    started = time.perf_counter()
    error: SharelearnError | None = None
    exit_code, error_type = 0, ""
    run: _Run | None = None
    with _signals_raise() as armed:
        try:
            with throwaway_certs(list(job.parties)) as certs:
                try:
                    run = _Run(job, options, report, certs)
                    run.start_tee()
                    run.start()
                    run.handshake()
                    run.wait()
                finally:
                    if run is not None:
                        run.close()
        except PartyFailed as exc:
            error = exc
            exit_code, error_type = (1, "PartyFailed") if run is None else run.outcome(exc)
        except SharelearnError as exc:
            error, exit_code, error_type = exc, exit_code_for(exc), type(exc).__name__
        except (_Signalled, KeyboardInterrupt) as exc:
            signum = exc.signum if isinstance(exc, _Signalled) else signal.SIGINT
            error = PartyFailed("launcher", f"stopped by {signal.Signals(signum).name}")
            exit_code, error_type = 128 + signum, exc.__class__.__name__
        armed[0] = False
        pids = {} if run is None else {name: p.proc.pid for name, p in run.parties.items()}
        done = {} if run is None else run.finished_steps()
        return write_summary(
            job,
            report,
            time.perf_counter() - started,
            error,
            pids,
            done,
            audit=options.audit,
            exit_code=exit_code,
            baseline=options.baseline,
            error_type=error_type or None,
        )
