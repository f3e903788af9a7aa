"""The `sharelearn` command: registers the sub-commands and maps exceptions to exit codes.

| exit code | meaning |
|---|---|
| 0 | success |
| 1 | the job ran and failed (a party died, erred or timed out) |
| 2 | bad input: job spec, CLI arguments, configuration |
| 3 | bad data file |
| 4 | protocol error (a peer misbehaved, a message was malformed or late) |
| 5 | cryptographic check failed |
| 6 | attestation refused |
| 70 | internal error (a bug: run with --debug and report it) |
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from sharelearn.core.errors import (
    AttestationError,
    ConfigError,
    CryptoError,
    DataError,
    PartyFailed,
    ProtocolError,
    SharelearnError,
)
from sharelearn.interfaces.cli import bench, certs, node, platform, run, serve, tee

__all__ = ["EXIT_CODES", "app", "exit_code", "main"]

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (PartyFailed, 1),
    (ConfigError, 2),
    (DataError, 3),
    (ProtocolError, 4),
    (CryptoError, 5),
    (AttestationError, 6),
]

app = typer.Typer(
    name="sharelearn",
    help="Shared machine learning: train on the union of several organisations' data; rows stay home.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run.run_command)
app.command("demo")(run.demo_command)
app.command("node")(node.node_command)
app.add_typer(certs.app, name="certs")
app.add_typer(tee.app, name="tee")
platform.register(app, certs.app)
app.add_typer(serve.serve_app, name="serve")
app.add_typer(serve.serving_app, name="serving")
app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    bench.bench_command
)


def exit_code(exc: BaseException) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 70


def main() -> None:
    """Entry point: run the app; show a one-line cause, the traceback only with --debug."""
    debug = "--debug" in sys.argv or os.environ.get("SHARELEARN_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    logging.basicConfig(
        level=os.environ.get("SHARELEARN_LOG_LEVEL", "DEBUG" if debug else "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = app(standalone_mode=False)
        if isinstance(result, int):
            sys.exit(result)
    except SharelearnError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exit_code(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive as ClickException
        from click import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(2)
        if debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(70)
