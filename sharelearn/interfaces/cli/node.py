"""`sharelearn node`: one party's worker process."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from sharelearn.runtime.worker import EndpointControl, NodeOptions, StdioControl, run_node

__all__ = ["node_command"]


def node_command(
    job: Annotated[Path, typer.Option(help="job YAML file")],
    party: Annotated[str, typer.Option(help="the party this node plays")],
    certs: Annotated[Path, typer.Option(help="folder with ca.pem, <party>.pem and <party>.key")],
    report_dir: Annotated[Path, typer.Option(help="where this party writes its outputs")] = Path(
        "reports/node"
    ),
    listen: Annotated[
        str, typer.Option(help="host:port to listen on (port 0 = any free port)")
    ] = "127.0.0.1:0",
    control: Annotated[
        str, typer.Option(help="'stdio' (driven by a launcher) or 'endpoints' (peers from the job)")
    ] = "endpoints",
    audit: Annotated[bool, typer.Option(help="record received messages for the leak audit")] = True,
    run_id: Annotated[
        str, typer.Option(help="this run's id, the same at every party (default: a digest of the job file)")
    ] = "",
    checkpoint: Annotated[
        bool, typer.Option(help="keep each step's state in the party folder, for `rerun --from-step`")
    ] = False,
    from_step: Annotated[str, typer.Option(help="rerun: start at this step, reusing earlier ones")] = "",
    resume_from: Annotated[
        Path | None, typer.Option(help="rerun: the original attempt's party folder (with checkpoint/)")
    ] = None,
    crl: Annotated[
        Path | None,
        typer.Option(
            help='revocation list, JSON {"revoked_serials": [hex, ...]}, checked on every peer link'
        ),
    ] = None,
) -> int:
    """Run this party's role of every step of JOB, talking to its peers over gRPC + mutual TLS."""
    options = NodeOptions(
        job_path=job,
        party=party,
        certs_dir=certs,
        report_dir=report_dir,
        listen=listen,
        audit=audit,
        run_id=run_id,
        crl_path=crl,
        checkpoint=checkpoint,
        from_step=from_step,
        resume_from=resume_from,
    )
    ctl = StdioControl() if control == "stdio" else EndpointControl()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return run_node(options, ctl)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Stopped by the launcher (another party failed): unwind, so half-written files are removed."""
    raise SystemExit(128 + signum)
