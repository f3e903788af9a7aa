"""`sharelearn serve guest|host` and `sharelearn serving status`: online scoring of vertical models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["guest_command", "host_command", "serve_app", "serving_app", "status_command"]

serve_app = typer.Typer(
    help="Serve a vertical model online (guest endpoint, host partial-score services).", no_args_is_help=True
)
serving_app = typer.Typer(help="Inspect serving processes.", no_args_is_help=True)


@serve_app.command("host")
def host_command(
    model: Annotated[str, typer.Option(help="model id (shared by every party's package)")],
    features: Annotated[str, typer.Option(help="CSV/Parquet path, sqlite:PATH#TABLE or py:module:factory")],
    party: Annotated[str, typer.Option(help="this host's party name")],
    certs: Annotated[Path, typer.Option(help="folder with ca.pem and <party>.pem/.key")],
    models: Annotated[Path, typer.Option(help="folder of this party's *.model packages")] = Path("models"),
    listen: Annotated[str, typer.Option(help="gRPC host:port (port 0: a free one)")] = "127.0.0.1:0",
    version: Annotated[Optional[int], typer.Option(help="version to load (default: newest)")] = None,  # noqa: UP045
    id_column: Annotated[str, typer.Option(help="id column of the feature source")] = "id",
    ready_file: Annotated[Optional[Path], typer.Option(help="write the port here once listening")] = None,  # noqa: UP045
) -> None:
    """Serve a host's partial results over gRPC + mTLS until stopped."""
    from sharelearn.runtime.serving.process import run_host

    run_host(
        party=party,
        model_id=model,
        folder=models,
        features=features,
        certs=certs,
        listen=listen,
        version=version,
        id_column=id_column,
        ready_file=ready_file,
    )


@serve_app.command("guest")
def guest_command(
    model: Annotated[str, typer.Option(help="model id")],
    party: Annotated[str, typer.Option(help="this guest's party name")],
    certs: Annotated[Path, typer.Option(help="folder with ca.pem and <party>.pem/.key")],
    host: Annotated[list[str], typer.Option(help="PARTY=HOST:PORT[,HOST:PORT...] per host (replicas)")],
    models: Annotated[Path, typer.Option(help="folder of this party's *.model packages")] = Path("models"),
    http: Annotated[str, typer.Option(help="REST host:port (port 0: a free one)")] = "127.0.0.1:8080",
    grpc: Annotated[Optional[str], typer.Option(help="also serve gRPC on host:port")] = None,  # noqa: UP045
    grpc_client: Annotated[list[str], typer.Option(help="party allowed to call the gRPC endpoint")] = [],  # noqa: B006
    version: Annotated[Optional[int], typer.Option(help="version to serve (default: newest)")] = None,  # noqa: UP045
    deadline_ms: Annotated[float, typer.Option(help="request deadline, host calls included")] = 1000.0,
    max_batch: Annotated[int, typer.Option(help="most rows per request")] = 1024,
    cache_ttl: Annotated[float, typer.Option(help="seconds host partial results are reused (0: off)")] = 0.0,
    ready_file: Annotated[Optional[Path], typer.Option(help="write the ports here once listening")] = None,  # noqa: UP045
) -> None:
    """Serve the guest endpoint (REST, optionally gRPC) until stopped."""
    from sharelearn.runtime.serving.guest import GuestConfig
    from sharelearn.runtime.serving.process import parse_hosts, run_guest

    config = GuestConfig(party, model, models, parse_hosts(host), deadline_ms / 1000.0, max_batch, cache_ttl)
    run_guest(
        config,
        certs=certs,
        http=http,
        grpc_listen=grpc,
        grpc_clients=grpc_client,
        version=version,
        ready_file=ready_file,
    )


@serving_app.command("status")
def status_command(
    url: Annotated[str, typer.Option(help="guest REST base URL")] = "http://127.0.0.1:8080",
    model: Annotated[str, typer.Option(help="model id")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Show a guest's served versions, canary, hosts and latency percentiles."""
    from sharelearn.runtime.serving.client import ServingClient

    with ServingClient(url) as client:
        status = client.status(model or None)
    if as_json:
        typer.echo(json.dumps(status))
        return
    typer.echo(
        f"model {status['model_id']}: active v{status['active']}, previous {status['previous']}, "
        f"loaded {status['loaded']}, canary {status['canary']}"
    )
    for h, addrs in status["hosts"].items():
        typer.echo(f"  host {h}: {', '.join(addrs)}")
    typer.echo(f"  latency ms: {status['latency_ms']}")
