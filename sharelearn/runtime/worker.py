"""The party worker (`sharelearn node`): one organisation's process in a job.

It holds the party's data and keys, listens for its peers over gRPC + mutual TLS, and runs its
role of each step of the job in order. A launcher drives it over a control channel (JSON lines on
stdin/stdout): the worker announces its port, receives its peers' addresses, then reports progress,
each step's outputs, and its traffic. A TEE job with no `tee:` block runs on an embedded simulated
cluster: the launcher starts it and hands its address to the leader (the first party) with the
peers; a leader given none (standalone, or under a platform worker) starts one itself before the
steps and stops it on every way out. Only status, metrics and counts cross the control channel —
never data, keys or intermediate values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import resource
import sys
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from sharelearn.algorithms.context import EmbeddedTee, PartyIdentity, StepContext
from sharelearn.algorithms.registry import STEPS, step_params
from sharelearn.algorithms.rolecheck import ROLE_CHECKS
from sharelearn.algorithms.runner import Resume, StepResult, run_party_steps
from sharelearn.algorithms.tee.embedded import LaunchedCluster, embedded_cluster, needs_embedded
from sharelearn.core.audit import WireAudit
from sharelearn.core.errors import ConfigError, SharelearnError
from sharelearn.core.fileio import atomic_write_json
from sharelearn.core.link import Link
from sharelearn.runtime.certs import PartyCredentials, load_credentials
from sharelearn.runtime.control import (
    ControlEvent,
    Listening,
    PartyDone,
    PartyError,
    Progress,
    StepDone,
    StepStarted,
    event_to_json,
    exit_code_for,
)
from sharelearn.runtime.data import read_party_data
from sharelearn.runtime.executors import make_executor
from sharelearn.runtime.grpc_link import GrpcLink
from sharelearn.runtime.jobspec import JobSpec, load_job
from sharelearn.runtime.resume import checkpoint_dir, restore_checkpoint, save_checkpoint
from sharelearn.tee.control import ControlSigner

__all__ = [
    "EndpointControl",
    "NodeOptions",
    "StdioControl",
    "default_run_id",
    "load_crl",
    "party_context",
    "run_node",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """How to start one party's worker."""

    job_path: Path
    party: str
    certs_dir: Path
    report_dir: Path
    listen: str = "127.0.0.1:0"
    audit: bool = True
    run_id: str = ""
    checkpoint: bool = False  # keep each step's state in `<workdir>/checkpoint/` (for reruns)
    from_step: str = ""  # rerun: reuse what steps before it left (restored from `resume_from`)
    resume_from: Path | None = None  # the original attempt's party workdir (its `checkpoint/`)
    crl_path: Path | None = None  # JSON {"revoked_serials": [...]}: checked on every data-plane link


def load_crl(path: Path | None) -> list[str]:
    """The revoked certificate serials (lower-case hex) in a CRL file the worker wrote, or []."""
    if path is None:
        return []
    try:
        doc = json.loads(Path(path).read_text())
        serials = doc["revoked_serials"]
        if not isinstance(serials, list) or not all(isinstance(x, str) for x in serials):
            raise TypeError("revoked_serials is not a list of strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a revocation list ({exc})") from exc
    return [x.lower() for x in serials]


class StdioControl:
    """The launcher's control channel: JSON lines out on stdout, one JSON line in on stdin.

    It is also the step observer of the step runner (`run_party_steps`): each step's start,
    progress and outputs go out as control events.
    """

    def __init__(self, out: IO[str] = sys.stdout, inp: IO[str] = sys.stdin) -> None:
        self._out = out
        self._inp = inp
        self.party = ""
        self.tee_cluster: object = None  # the launcher's embedded TEE cluster address, if it sent one

    def emit(self, event: ControlEvent) -> None:
        self._out.write(event_to_json(event) + "\n")
        self._out.flush()

    def peers(self, job: JobSpec, me: str) -> dict[str, str]:
        line = self._inp.readline()
        if not line:
            raise ConfigError(f"{me}: the launcher closed the control channel before sending peer addresses")
        message = json.loads(line)
        self.tee_cluster = message.get("tee")
        return {str(k): str(v) for k, v in message.get("peers", {}).items()}

    def started(self, index: int, step: str) -> None:
        self.emit(StepStarted(self.party, step, index))

    def progress(self, step: str, message: str, metrics: Mapping[str, Any]) -> None:
        self.emit(Progress(self.party, step, message, dict(metrics)))

    def done(self, index: int, step: str, result: StepResult) -> None:
        self.emit(StepDone(self.party, step, result.as_dict(), index))


class EndpointControl(StdioControl):
    """Standalone deployment: peer addresses come from the job's `endpoint:` entries."""

    def peers(self, job: JobSpec, me: str) -> dict[str, str]:
        missing = [p.name for p in job.parties.values() if p.name != me and not p.endpoint]
        if missing:
            raise ConfigError(
                f"{job.path}: parties {missing} have no `endpoint:`; a standalone node needs them"
            )
        return {p.name: str(p.endpoint) for p in job.parties.values() if p.name != me}


def default_run_id(job_path: Path) -> str:
    """The run id of standalone nodes started by hand: a digest of the job file they all read.

    Every party of a run must use the same run id (model ids derive from it); a launcher or a
    coordinator hands out a fresh random one per run instead.
    """
    return hashlib.sha256(Path(job_path).read_bytes()).hexdigest()[:32]


def party_context(job: JobSpec, party: str, link: Link, workdir: Path, run_id: str = "") -> StepContext:
    """The context `party` starts the job's steps with: its data, the job's roles and route."""
    spec = job.parties[party]
    data = read_party_data(spec.data) if spec.data is not None else None
    return StepContext(
        link=link,
        party=party,
        roles={p.name: p.role for p in job.parties.values()},
        data=data,
        data_parties=[p.name for p in job.parties.values() if p.data is not None],
        workdir=workdir,
        job_dir=job.base_dir,
        job=job.name,
        run_id=run_id,
        engine="tee" if job.engine == "tee" else "federated",
        tee_config=job.tee,
    )


def _resume(ctx: StepContext, names: list[str], options: NodeOptions) -> Resume | None:
    """A rerun's start: the checkpoint after the step before `from_step` restored into `ctx`."""
    if not options.from_step:
        return None
    if options.from_step not in names or options.resume_from is None:
        raise ConfigError(f"rerun: step {options.from_step!r} is not in {names} or no attempt to resume")
    start = names.index(options.from_step)
    if start == 0:
        return Resume(0, {})
    ctx.catalog = ctx.catalog or STEPS
    return Resume(start, restore_checkpoint(ctx, checkpoint_dir(options.resume_from, start - 1)))


def _leads_embedded_tee(job: JobSpec, party: str) -> bool:
    """Whether `party` leads a TEE job that runs on the embedded default cluster."""
    steps = [(s.name, s.params) for s in job.steps]
    leader = party == next(iter(job.parties))
    return job.engine == "tee" and needs_embedded(steps, job.tee, leader=leader) is not None


def _leader_tee(
    job: JobSpec, workdir: Path, control: StdioControl, signer: ControlSigner, stack: contextlib.ExitStack
) -> EmbeddedTee:
    """The leader's embedded cluster: the launcher's (its address came with the peers), or else
    one started in this process until the node exits (a standalone node)."""
    if control.tee_cluster is not None:
        return LaunchedCluster.from_wire(control.tee_cluster, signer)
    steps = [(s.name, s.params) for s in job.steps]
    started = stack.enter_context(embedded_cluster(workdir, steps, job.tee, leader=True))
    assert started is not None  # invariant: the caller checked the job needs one
    return started


def _connect(
    options: NodeOptions, job: JobSpec, control: StdioControl, audit: WireAudit | None, tee_admin: str
) -> tuple[GrpcLink, PartyCredentials]:
    """Open the party's data-plane link, announce it, and connect it to the peers."""
    creds = load_credentials(options.certs_dir, options.party)
    link = GrpcLink(
        creds,
        job.parties,
        listen=options.listen,
        timeout=job.timeout_s,
        audit=audit,
        revoked=load_crl(options.crl_path),
    )
    try:
        control.emit(Listening(options.party, link.port, os.getpid(), tee_admin))
        link.connect(control.peers(job, options.party))
    except BaseException:
        link.close()
        raise
    return link, creds


def _finish(ctx: StepContext, link: GrpcLink, audit: WireAudit | None, outputs: dict[str, Any]) -> PartyDone:
    """Write the party's audit and `outputs.json`; the `PartyDone` event that reports them."""
    # Totals, and per peer for the dashboard's "what crossed the wire" (counters only).
    stats: dict[str, Any] = {
        **link.stats.as_dict(),
        "peers": {str(peer): asdict(st) for peer, st in link.stats.peers.items()},
    }
    if audit is not None:
        audit.save(ctx.workdir / "audit.msgpack")
    atomic_write_json(ctx.workdir / "outputs.json", {"party": ctx.party, "steps": outputs, "traffic": stats})
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return PartyDone(ctx.party, outputs, stats, os.getpid(), max_rss_mb)


def _run_party(
    options: NodeOptions, control: StdioControl, audit: WireAudit | None, stack: contextlib.ExitStack
) -> PartyDone:
    """Load the job, connect, run this party's steps; everything it opens is closed by `stack`."""
    party, workdir = options.party, options.report_dir / "parties" / options.party
    job = load_job(options.job_path, step_params=step_params(), step_checks=ROLE_CHECKS)
    if party not in job.parties:
        raise ConfigError(f"{options.job_path}: party {party!r} is not in the job ({', '.join(job.parties)})")
    leads_tee, signer = _leads_embedded_tee(job, party), ControlSigner()
    link, creds = _connect(options, job, control, audit, signer.public if leads_tee else "")
    stack.callback(link.close)
    ctx = party_context(job, party, link, workdir, options.run_id or default_run_id(options.job_path))
    ctx.identity = PartyIdentity(party, creds.ca_pem, creds.cert_pem, creds.key_pem)
    # The party's heavy kernels run on its `compute:` executor (default: threads, every core).
    ctx.executor = make_executor(job.parties[party].compute)
    stack.callback(ctx.executor.close)
    if leads_tee:  # the embedded default cluster: started by the launcher (or here), never by a step
        ctx.tee_embedded = _leader_tee(job, workdir, control, signer, stack)
    steps = [(s.name, s.params) for s in job.steps]
    results = run_party_steps(
        ctx,
        link,
        steps,
        control,
        resume=_resume(ctx, [name for name, _ in steps], options),
        checkpoint=save_checkpoint if options.checkpoint else None,
    )
    return _finish(ctx, link, audit, {name: r.as_dict() for name, r in results.items()})


def run_node(options: NodeOptions, control: StdioControl) -> int:
    """Run one party of a job to the end; return the process exit code (0 only on success)."""
    party = control.party = options.party
    (options.report_dir / "parties" / party).mkdir(parents=True, exist_ok=True)
    audit = WireAudit() if options.audit else None
    with contextlib.ExitStack() as stack:  # closed after the report, last first: TEE cluster, executor, link
        try:
            control.emit(_run_party(options, control, audit, stack))
            return 0
        except SharelearnError as exc:  # exit code per the README table (3: data, 4: protocol, ...)
            log.error("%s failed: %s", party, exc)
            code = exit_code_for(exc)
            control.emit(PartyError(party, f"{type(exc).__name__}: {exc}", code))
            return code
        except Exception as exc:  # an unexpected bug: report it with its traceback in the party log
            log.error("%s crashed:\n%s", party, traceback.format_exc())
            control.emit(PartyError(party, f"{type(exc).__name__}: {exc}", 70))
            return 70
