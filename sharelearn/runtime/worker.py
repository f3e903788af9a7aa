"""The party worker (`sharelearn node`): one organisation's process in a job.

It holds the party's data and keys, listens for its peers over gRPC + mutual TLS, and runs its
role of each step of the job in order. A launcher drives it over a control channel (JSON lines on
stdin/stdout): the worker announces its port, receives its peers' addresses, then reports progress,
each step's outputs, and its traffic. Only status, metrics and counts cross the control channel —
never data, keys or intermediate values.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sharelearn.algorithms.context import StepContext
from sharelearn.algorithms.registry import get_step, step_params
from sharelearn.core.audit import WireAudit
from sharelearn.core.errors import ConfigError, SharelearnError
from sharelearn.core.fileio import atomic_write_json
from sharelearn.runtime.certs import load_credentials
from sharelearn.runtime.data import read_party_data
from sharelearn.runtime.executors import make_executor
from sharelearn.runtime.grpc_link import GrpcLink
from sharelearn.runtime.jobspec import JobSpec, load_job

__all__ = ["EndpointControl", "NodeOptions", "StdioControl", "run_node"]

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


class StdioControl:
    """The launcher's control channel: JSON lines out on stdout, one JSON line in on stdin."""

    def __init__(self, out: IO[str] = sys.stdout, inp: IO[str] = sys.stdin) -> None:
        self._out = out
        self._inp = inp

    def emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}) + "\n")
        self._out.flush()

    def peers(self, job: JobSpec, me: str) -> dict[str, str]:
        line = self._inp.readline()
        if not line:
            raise ConfigError(f"{me}: the launcher closed the control channel before sending peer addresses")
        message = json.loads(line)
        return {str(k): str(v) for k, v in message.get("peers", {}).items()}


class EndpointControl(StdioControl):
    """Standalone deployment: peer addresses come from the job's `endpoint:` entries."""

    def peers(self, job: JobSpec, me: str) -> dict[str, str]:
        missing = [p.name for p in job.parties.values() if p.name != me and not p.endpoint]
        if missing:
            raise ConfigError(
                f"{job.path}: parties {missing} have no `endpoint:`; a standalone node needs them"
            )
        return {p.name: str(p.endpoint) for p in job.parties.values() if p.name != me}


def _context(job: JobSpec, party: str, link: GrpcLink, workdir: Path, control: StdioControl) -> StepContext:
    spec = job.parties[party]
    data = read_party_data(spec.data) if spec.data is not None else None
    return StepContext(
        link=link,
        party=party,
        roles={p.name: p.role for p in job.parties.values()},
        data=data,
        data_parties=[p.name for p in job.parties.values() if p.data is not None],
        workdir=workdir,
        state={"engine": job.engine, "tee": job.tee},
        job_dir=job.base_dir,
    )


def _run_steps(job: JobSpec, ctx: StepContext, link: GrpcLink, control: StdioControl) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for index, step in enumerate(job.steps):
        definition = get_step(step.name)
        scoped = link.scope("step", index, step.name)
        ctx.link = scoped

        def progress(message: str, metrics: Mapping[str, Any], _name: str = step.name) -> None:
            control.emit("progress", party=ctx.party, step=_name, message=message, metrics=dict(metrics))

        ctx.progress = progress
        started = time.perf_counter()
        control.emit("step_started", party=ctx.party, step=step.name)
        result = definition.run(ctx, step.params)
        elapsed = time.perf_counter() - started
        outputs[step.name] = {**result, "elapsed_s": round(elapsed, 4)}
        control.emit("step_done", party=ctx.party, step=step.name, outputs=outputs[step.name])
    return outputs


def run_node(options: NodeOptions, control: StdioControl) -> int:
    """Run one party of a job to the end; return the process exit code (0 only on success)."""
    party = options.party
    workdir = options.report_dir / "parties" / party
    workdir.mkdir(parents=True, exist_ok=True)
    audit = WireAudit() if options.audit else None
    link: GrpcLink | None = None
    executor = None
    try:
        job = load_job(options.job_path, step_params=step_params())
        if party not in job.parties:
            raise ConfigError(
                f"{options.job_path}: party {party!r} is not in the job ({', '.join(job.parties)})"
            )
        creds = load_credentials(options.certs_dir, party)
        link = GrpcLink(creds, job.parties, listen=options.listen, timeout=job.timeout_s, audit=audit)
        control.emit("listening", party=party, port=link.port, pid=os.getpid())
        link.connect(control.peers(job, party))
        ctx = _context(job, party, link, workdir, control)
        # The party's heavy kernels run on its `compute:` executor (default: threads, every core).
        executor = make_executor(job.parties[party].compute)
        ctx.executor = executor  # type: ignore[attr-defined]  # TODO(#15): a StepContext field
        outputs = _run_steps(job, ctx, link, control)
        stats = link.stats.as_dict()
        if audit is not None:
            audit.save(workdir / "audit.msgpack")
        atomic_write_json(workdir / "outputs.json", {"party": party, "steps": outputs, "traffic": stats})
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        control.emit(
            "done", party=party, outputs=outputs, traffic=stats, pid=os.getpid(), max_rss_mb=max_rss_mb
        )
        return 0
    except SharelearnError as exc:
        log.error("%s failed: %s", party, exc)
        control.emit("error", party=party, error=f"{type(exc).__name__}: {exc}")
        return 1
    except Exception as exc:  # an unexpected bug: report it with its traceback in the party log
        log.error("%s crashed:\n%s", party, traceback.format_exc())
        control.emit("error", party=party, error=f"{type(exc).__name__}: {exc}")
        return 2
    finally:
        if executor is not None:
            executor.close()
        if link is not None:
            link.close()
