"""`sharelearn certs init`: a CA and one mTLS certificate per party."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sharelearn.runtime.certs import init_certs

__all__ = ["app", "init_command"]

app = typer.Typer(help="Certificates for mutual TLS between parties.", no_args_is_help=True)


@app.command("init")
def init_command(
    parties: Annotated[str, typer.Option(help="comma-separated party names, e.g. guest,host,arbiter")],
    out: Annotated[Path, typer.Option(help="output folder")],
) -> None:
    """Create ca.pem/ca.key and <party>.pem/<party>.key for every party in OUT."""
    names = [p.strip() for p in parties.split(",") if p.strip()]
    init_certs(names, out)
    typer.echo(f"wrote a CA and certificates for {', '.join(names)} to {out}")
