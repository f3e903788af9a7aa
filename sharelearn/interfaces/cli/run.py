"""`sharelearn run JOB.yaml` and `sharelearn demo`: run every party locally and summarise."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sharelearn.interfaces.api import demo_job_path
from sharelearn.runtime.control import ControlEvent, PartyDone, Progress, StepDone, exit_code_for
from sharelearn.runtime.launcher import LaunchOptions, launch

__all__ = ["demo_command", "print_summary", "run_command"]


def _progress_printer(console: Console) -> Any:
    seen: set[tuple[Any, ...]] = set()

    def on_event(event: ControlEvent) -> None:
        party = event.party
        if isinstance(event, Progress):
            epoch = event.metrics.get("epoch")
            if epoch is not None:  # every party reports each epoch; show it once
                key = (event.step, epoch)
                if key in seen:
                    return
                seen.add(key)
            console.print(f"[cyan]{party:>10}[/] {event.step}: {event.message}")
        elif isinstance(event, StepDone):
            took = event.outputs.get("elapsed_s", 0)
            console.print(f"[cyan]{party:>10}[/] {event.step}: done in {took:.2f} s")
        elif isinstance(event, PartyDone):
            console.print(f"[cyan]{party:>10}[/] finished")

    return on_event


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Print the human summary of a run: status, parties, step outputs, wire."""
    ok = summary["status"] == "success"
    console.print(
        f"\n[bold]{summary['job']}[/]: "
        + ("[green]success[/]" if ok else f"[red]failed[/]: {summary['error']}")
    )
    parties = Table("party", "role", "pid", "sent", "received", "messages", title="parties")
    for name, p in summary["parties"].items():
        parties.add_row(
            name,
            p["role"],
            str(p["pid"]),
            _human_bytes(p["bytes_sent"]),
            _human_bytes(p["bytes_received"]),
            str(p["messages"]),
        )
    console.print(parties)
    for step, outputs in summary["steps"].items():
        shown = {k: v for k, v in outputs.items() if k not in ("parties", "history") and "_central" not in k}
        shown = {k: v for k, v in shown.items() if not k.endswith("_delta")}
        console.print(f"[bold]{step}[/]: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        central = [k[: -len("_centralized")] for k in outputs if k.endswith("_centralized")]
        if central:
            table = Table(
                "metric", "federated", "centralised (pooled data)", "delta", title=f"{step}: result"
            )
            for metric in central:
                table.add_row(
                    metric,
                    f"{outputs.get(metric, float('nan')):.4f}",
                    f"{outputs[metric + '_centralized']:.4f}",
                    f"{outputs.get(metric + '_delta', float('nan')):.4f}",
                )
            console.print(table)
    wire = summary["wire"]
    console.print(
        f"wire: {_human_bytes(wire['bytes'])} in {wire['messages']} messages, "
        + ("not audited" if wire["leaks"] is None else f"leaks: {wire['leaks']}")
        + (
            f" ({wire['audit']} audit, coverage {wire['audit_coverage']:.1%})"
            if wire.get("audit_coverage")
            else ""
        )
    )
    for plot in summary.get("plots", []):
        console.print(f"plot: {Path(summary['report_dir']) / plot}")
    console.print(f"time: {summary['elapsed_s']:.2f} s; report: {summary['report_dir']}")


def _refused(job: Path, exc: Exception) -> dict[str, Any]:
    """The one JSON object `--json` prints when no party could start (an invalid job file, a bug)."""
    return {
        "job": str(job),
        "status": "failed",
        "error": str(exc),
        "error_type": type(exc).__name__,
        "failed_party": None,
        "exit_code": exit_code_for(exc),
        "steps": {},
    }


def _run(
    job: Path, as_json: bool, report_dir: Path | None, audit: str, timeout: float | None, baseline: bool
) -> int:
    console = Console(stderr=True)
    options = LaunchOptions(report_dir, audit, timeout, _progress_printer(console), baseline)
    try:
        summary = launch(job, options)
    except Exception as exc:  # the CLI's main() reports it on stderr and exits with its code
        if as_json:
            sys.stdout.write(json.dumps(_refused(job, exc)) + "\n")
        raise
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        print_summary(summary, Console())
    return int(summary.get("exit_code", 0 if summary["status"] == "success" else 1))


def run_command(
    job: Annotated[Path, typer.Argument(help="job YAML file", exists=False)],
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON summary on stdout")] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="report folder (default: ./reports/<job>-<time>)")
    ] = None,
    audit: Annotated[
        str,
        typer.Option(
            help="leak check of what each party received: 'sample' (random bytes, <= 5% of the job's"
            " time), 'full' (every byte), 'off'",
            envvar="SHARELEARN_AUDIT",
        ),
    ] = "sample",
    no_audit: Annotated[bool, typer.Option("--no-audit", help="same as --audit off")] = False,
    timeout: Annotated[float | None, typer.Option(help="fail the job after this many seconds")] = None,
    baseline: Annotated[
        bool, typer.Option(help="train the centralised references on the pooled data (after the run)")
    ] = True,
) -> int:
    """Run every party of JOB as its own process over gRPC + mutual TLS on this machine."""
    return _run(job, as_json, report_dir, "off" if no_audit else audit, timeout, baseline)


def demo_command(
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON summary on stdout")] = False,
    report_dir: Annotated[Path | None, typer.Option(help="report folder")] = None,
) -> int:
    """Run the embedded demo: PSI, then vertical LR (bank, shop, arbiter) on the breast-cancer data."""
    return _run(demo_job_path(), as_json, report_dir, "sample", None, True)
