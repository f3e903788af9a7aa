"""`sharelearn bench audit [--psi N]`: what the launcher's leak check costs, measured in one run.

Runs the same job three times — `--audit off`, the default `--audit sample`, and `--audit full` —
and prints each run's wall time, the leak scan's own time (`wire.audit_s`), the share of the
received bytes it searched, and the ratios to the unaudited run. The default job is the embedded
demo (PSI + hetero LR + evaluate on breast cancer); `--psi N` runs a two-party PSI of N ids per
party instead (half shared), where the exhaustive scan has the most to search.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_psi import _job as psi_job
from benchmarks.bench_psi import _write_parties
from benchmarks.common import print_result
from sharelearn.interfaces.api import demo_job_path
from sharelearn.runtime.launcher import LaunchOptions, launch

_MODES = ("off", "sample", "full")


def _run(job: Path, mode: str, report: Path) -> dict[str, Any]:
    """Run the job; `wall_s` is the launcher's whole time, leak scan included."""
    started = time.perf_counter()
    summary = launch(job, LaunchOptions(report_dir=report, audit=mode))
    if summary["status"] != "success":
        raise SystemExit(f"{mode}: the job failed: {summary['error']}")
    return {**summary, "wall_s": round(time.perf_counter() - started, 3)}


def run(psi_size: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        folder = Path(tmp)
        job = demo_job_path()
        if psi_size:
            _write_parties(folder, psi_size, seed=psi_size)
            job = psi_job(folder, 65536)
        runs = {mode: _run(job, mode, folder / mode) for mode in _MODES}
    off = runs["off"]["wall_s"]
    result: dict[str, Any] = {"job": runs["off"]["job"], "off_s": off}
    for mode in ("sample", "full"):
        wire = runs[mode]["wire"]
        result[f"{mode}_s"] = runs[mode]["wall_s"]
        result[f"{mode}_scan_s"] = wire["audit_s"]
        result[f"{mode}_coverage"] = wire["audit_coverage"]
        result[f"{mode}_leaks"] = wire["leaks"]
        result[f"{mode}_ratio"] = round(runs[mode]["wall_s"] / off, 3)
        result[f"{mode}_scan_share"] = round(wire["audit_s"] / runs[mode]["wall_s"], 4)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench audit", description=__doc__)
    parser.add_argument("--psi", type=int, default=0, help="run a PSI of N ids per party, not the demo")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    print_result(run(args.psi or None), args.json)
    return 0
