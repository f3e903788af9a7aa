"""The Python API: run a job file locally and get its summary."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from sharelearn.runtime.control import ControlEvent
from sharelearn.runtime.launcher import LaunchOptions, launch

__all__ = ["demo_job_path", "run_job"]


def run_job(
    job_path: str | Path,
    *,
    report_dir: str | Path | None = None,
    audit: bool = True,
    timeout_s: float | None = None,
    on_event: Callable[[ControlEvent], None] | None = None,
    baseline: bool = True,
) -> dict[str, Any]:
    """Run every party of a job as a local process; return the summary dict (see the README).

    `baseline=False` skips the centralised references (`--no-baseline`).
    """
    options = LaunchOptions(
        report_dir=None if report_dir is None else Path(report_dir),
        audit=audit,
        timeout_s=timeout_s,
        on_event=on_event or (lambda event: None),
        baseline=baseline,
    )
    return launch(job_path, options)


def demo_job_path() -> Path:
    """The embedded demo job (shipped inside the package, so it runs without ../shared)."""
    return Path(str(resources.files("sharelearn.interfaces") / "demo" / "hetero_lr_breast.yaml"))
