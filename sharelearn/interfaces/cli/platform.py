"""The platform commands: `coordinator`, `worker`, `submit`, `jobs`, `status`, `logs`, `cancel`,
`rerun`, `approve`, `reject`, `models`, `parties`, and `certs request` / `certs sign`.

Clients find the coordinator with `--coordinator URL` (or $SHARELEARN_COORDINATOR) and authenticate
with `--token` (or $SHARELEARN_TOKEN: the operator's `admin.token`, or a party's `<party>.token`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sharelearn.core.errors import ConfigError
from sharelearn.runtime.agent import CoordinatorClient, Worker, WorkerOptions, enroll_worker
from sharelearn.runtime.coordinator import CoordinatorOptions, open_coordinator, serve
from sharelearn.runtime.coordinator.states import FINAL_JOB_STATES
from sharelearn.runtime.enroll import request_certificate, sign_request

__all__ = [
    "approve_command",
    "cancel_command",
    "certs_request_command",
    "certs_sign_command",
    "coordinator_app",
    "coordinator_command",
    "down_command",
    "jobs_command",
    "logs_command",
    "models_command",
    "parties_command",
    "register",
    "reject_command",
    "rerun_command",
    "status_command",
    "submit_command",
    "token_command",
    "up_command",
    "worker_command",
]

coordinator_app = typer.Typer(help="The coordinator service: job store, scheduler and REST API.")

Url = Annotated[str, typer.Option("--coordinator", envvar="SHARELEARN_COORDINATOR", help="coordinator URL")]
Token = Annotated[str, typer.Option("--token", envvar="SHARELEARN_TOKEN", help="API token")]
Json = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]
_DEFAULT_URL = "http://127.0.0.1:8710"


def _client(url: str, token: str = "") -> CoordinatorClient:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no per-request INFO lines in the output
    return CoordinatorClient(url, token)


@coordinator_app.callback(invoke_without_command=True)
def coordinator_command(
    ctx: typer.Context,
    state_dir: Annotated[Path, typer.Option(help="database, CA, admin token")] = Path("coordinator-state"),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 = any free port, written to STATE/url)")] = 8710,
    db: Annotated[str, typer.Option(help="SQLAlchemy URL (default: SQLite in STATE)")] = "",
    heartbeat_timeout: Annotated[
        float, typer.Option(help="seconds of silence before a worker is lost")
    ] = 10.0,
) -> int:
    """Run the coordinator (the sub-command `token` makes enrollment tokens)."""
    ctx.obj = CoordinatorOptions(state_dir, host, port, db, heartbeat_timeout)
    if ctx.invoked_subcommand is not None:
        return 0
    return serve(ctx.obj)


@coordinator_app.command("token")
def token_command(
    ctx: typer.Context,
    party: Annotated[str, typer.Option(help="the party that will enroll with it")],
    ttl: Annotated[float, typer.Option(help="seconds it stays valid")] = 86400.0,
) -> None:
    """Print a one-time enrollment token for PARTY."""
    _, identity = open_coordinator(ctx.obj)
    typer.echo(identity.enrollment_token(party, ttl))


def worker_command(
    coordinator: Url = _DEFAULT_URL,
    party: Annotated[str, typer.Option(help="this organisation's party name")] = "",
    data_dir: Annotated[Path, typer.Option(help="folder with this party's data files")] = Path("."),
    certs: Annotated[
        Path | None, typer.Option(help="key, certificate, token (default DATA_DIR/../<party>-certs)")
    ] = None,
    work_dir: Annotated[Path | None, typer.Option(help="outputs (default: DATA_DIR/.sharelearn)")] = None,
    policy: Annotated[
        Path | None, typer.Option(help="approval policy YAML (default: ask for every job)")
    ] = None,
    enroll_token: Annotated[str, typer.Option(help="one-time token from `coordinator token`")] = "",
    listen_host: Annotated[str, typer.Option(help="address the data plane listens on")] = "127.0.0.1",
) -> int:
    """Run this organisation's worker: connects out to the coordinator and runs its tasks."""
    if not party:
        raise ConfigError("worker: --party is required")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a heartbeat is not a log line
    certs = certs or data_dir.resolve().parent / f"{party}-certs"
    if enroll_token and not (certs / f"{party}.token").is_file():
        enroll_worker(_client(coordinator), party, certs, enroll_token)
    options = WorkerOptions(
        coordinator, party, data_dir, certs, work_dir or data_dir / ".sharelearn", policy, listen_host
    )
    return Worker(options).run_forever()


def _out(value: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(value) if as_json else text)


def submit_command(
    job: Path, coordinator: Url = _DEFAULT_URL, token: Token = "", as_json: Json = False
) -> None:
    """Submit JOB.yaml; print its id."""
    got = _client(coordinator, token).call("POST", "/api/v1/jobs", content=job.read_bytes())
    _out(got, as_json, got["job_id"])


def jobs_command(coordinator: Url = _DEFAULT_URL, token: Token = "", as_json: Json = False) -> None:
    """List the jobs this caller may see."""
    rows = _client(coordinator, token).call("GET", "/api/v1/jobs")
    _out(rows, as_json, "\n".join(f"{j['job_id']}  {j['state']:<18} {j['name']}  {j['error']}" for j in rows))


def status_command(
    job_id: str, coordinator: Url = _DEFAULT_URL, token: Token = "", as_json: Json = False
) -> None:
    """A job's state, tasks and metrics."""
    j = _client(coordinator, token).call("GET", f"/api/v1/jobs/{job_id}")
    lines = [f"{j['job_id']} {j['name']}: {j['state']} (attempt {j['attempt']}) {j['error']}"]
    for step, parties in j["tasks"].items():
        lines.append(f"  {step}: " + ", ".join(f"{p}={t['state']}" for p, t in parties.items()))
    lines += [f"  {step}: {m}" for step, m in j["metrics"].items() if m]
    _out(j, as_json, "\n".join(lines))


def logs_command(
    job_id: str,
    coordinator: Url = _DEFAULT_URL,
    token: Token = "",
    party: Annotated[str, typer.Option(help="only this party's lines")] = "",
    follow: Annotated[bool, typer.Option("--follow", help="keep printing until the job ends")] = False,
    as_json: Json = False,
) -> None:
    """Print a job's log and progress lines."""
    client, after = _client(coordinator, token), 0
    while True:
        rows = client.call(
            "GET", f"/api/v1/jobs/{job_id}/logs", params={"party": party or None, "after": after}
        )
        for e in rows:
            after = e["id"]
            _out(e, as_json, f"{e['party']:>10} {e['kind']:<12} {e['step']} {e['message']}")
        if not follow or (
            not rows and client.call("GET", f"/api/v1/jobs/{job_id}")["state"] in FINAL_JOB_STATES
        ):
            return
        time.sleep(0.3)


def cancel_command(
    job_id: str, coordinator: Url = _DEFAULT_URL, token: Token = "", as_json: Json = False
) -> None:
    """Cancel a job."""
    got = _client(coordinator, token).call("POST", f"/api/v1/jobs/{job_id}/cancel")
    _out(got, as_json, got["state"])


def rerun_command(
    job_id: str,
    from_step: Annotated[str, typer.Option(help="the step to start from")] = "",
    coordinator: Url = _DEFAULT_URL,
    token: Token = "",
    as_json: Json = False,
) -> None:
    """Submit a job again (a new job whose parent is JOB_ID)."""
    got = _client(coordinator, token).call(
        "POST", f"/api/v1/jobs/{job_id}/rerun", json={"from_step": from_step}
    )
    _out(got, as_json, got["job_id"])


def _decide(
    job_id: str, party: str, certs: Path, coordinator: str, decision: str, reason: str
) -> dict[str, str]:
    for f in (f"{party}.key", f"{party}.token"):
        if not (certs / f).is_file():
            raise ConfigError(
                f"{certs / f}: missing; approvals are signed with the party's own key and token"
            )
    client = _client(coordinator, (certs / f"{party}.token").read_text().strip())
    job = client.call("GET", f"/api/v1/jobs/{job_id}")
    state = client.decide(job, party, (certs / f"{party}.key").read_bytes(), decision, reason)
    return {"job_id": job_id, "party": party, "decision": decision, "state": state}


def approve_command(
    job_id: str,
    party: Annotated[str, typer.Option(help="the party approving")],
    certs: Annotated[Path, typer.Option(help="the party's key and token folder")],
    coordinator: Url = _DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """Approve a job on this party's data (signed with its key)."""
    got = _decide(job_id, party, certs, coordinator, "approve", "")
    _out(got, as_json, f"{job_id}: approved by {party}; job {got['state']}")


def reject_command(
    job_id: str,
    party: Annotated[str, typer.Option(help="the party rejecting")],
    certs: Annotated[Path, typer.Option(help="the party's key and token folder")],
    reason: Annotated[str, typer.Option(help="why (shown in the job's error)")] = "",
    coordinator: Url = _DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """Reject a job: it ends, naming this party and the reason."""
    got = _decide(job_id, party, certs, coordinator, "reject", reason)
    _out(got, as_json, f"{job_id}: rejected by {party}; job {got['state']}")


def models_command(coordinator: Url = _DEFAULT_URL, token: Token = "", as_json: Json = False) -> None:
    """The model registry: model id, version, parties, lineage."""
    rows = _client(coordinator, token).call("GET", "/api/v1/models")
    _out(
        rows,
        as_json,
        "\n".join(
            f"{m['model_id']} v{m['version']} {m['step']} job {m['job_id']} {m['parties']}" for m in rows
        ),
    )


def parties_command(coordinator: Url = _DEFAULT_URL, token: Token = "", as_json: Json = False) -> None:
    """Enrolled workers and their last heartbeat."""
    rows = _client(coordinator, token).call("GET", "/api/v1/parties")
    now = time.time()
    _out(
        rows,
        as_json,
        "\n".join(
            f"{p['party']:<12} last seen {now - p['last_heartbeat']:.1f} s ago"
            + (" REVOKED" if p["revoked"] else "")
            for p in rows
        ),
    )


def certs_request_command(
    party: Annotated[str, typer.Option(help="this organisation's party name")],
    out: Annotated[Path, typer.Option(help="folder for <party>.key and <party>.csr")],
) -> None:
    """Make this organisation's private key and certificate request (the key never leaves OUT)."""
    typer.echo(str(request_certificate(party, out)))


def certs_sign_command(
    csr: Annotated[Path, typer.Option(help="the party's <party>.csr")],
    ca: Annotated[Path, typer.Option(help="folder with the federation CA's ca.pem and ca.key")],
    out: Annotated[Path, typer.Option(help="where to write the certificate")],
    days: Annotated[float, typer.Option(help="validity in days")] = 90.0,
) -> None:
    """Sign a party's certificate request with the federation CA."""
    out.write_bytes(sign_request(csr.read_bytes(), ca, days=days))
    typer.echo(str(out))


def register(app: typer.Typer, certs_app: typer.Typer) -> None:
    """Add the platform commands to the `sharelearn` app."""
    app.add_typer(coordinator_app, name="coordinator")
    commands: list[tuple[str, Callable[..., Any]]] = [
        ("worker", worker_command),
        ("submit", submit_command),
        ("jobs", jobs_command),
        ("status", status_command),
        ("logs", logs_command),
        ("cancel", cancel_command),
        ("rerun", rerun_command),
        ("approve", approve_command),
        ("reject", reject_command),
        ("models", models_command),
        ("parties", parties_command),
        ("up", up_command),
        ("down", down_command),
    ]
    for name, fn in commands:
        app.command(name)(fn)
    certs_app.command("request")(certs_request_command)
    certs_app.command("sign")(certs_sign_command)


def up_command(
    job: Annotated[Path | None, typer.Argument(help="job YAML (default: the embedded demo)")] = None,
    home: Annotated[Path, typer.Option(help="folder for the coordinator and every party")] = Path(
        "sharelearn-up"
    ),
    port: Annotated[int, typer.Option(help="coordinator port (0 = any free port)")] = 8710,
    as_json: Json = False,
) -> int:
    """Start a coordinator and a worker per party on this machine, submit JOB, print the coordinator URL."""
    from sharelearn.algorithms.registry import step_params
    from sharelearn.interfaces.api import demo_job_path
    from sharelearn.runtime.coordinator.local import LocalPlatform
    from sharelearn.runtime.jobspec import load_job

    path = job or demo_job_path()
    local = LocalPlatform(home.resolve())
    url = local.start(load_job(path, step_params=step_params()), port)
    job_id = local.submit(path.read_text())
    token = home.resolve() / "coordinator" / "admin.token"
    _out(
        {"url": url, "job_id": job_id, "admin_token_file": str(token)},
        as_json,
        f"coordinator: {url}\njob: {job_id}\n"
        f"export SHARELEARN_COORDINATOR={url} SHARELEARN_TOKEN=$(cat {token})\n"
        f"then: sharelearn status {job_id}; stop with: sharelearn down --home {home}",
    )
    return 0


def down_command(
    home: Annotated[Path, typer.Option(help="the folder `sharelearn up` used")] = Path("sharelearn-up"),
) -> None:
    """Stop everything `sharelearn up` started."""
    from sharelearn.runtime.coordinator.local import stop_recorded

    pids = stop_recorded(home.resolve())
    typer.echo(f"stopped {len(pids)} process groups" if pids else f"nothing running under {home}")
