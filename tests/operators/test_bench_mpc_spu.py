"""`bench mpc`'s SPU plumbing: the subprocess JSON is matched to our cases, failures are reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import bench_mpc


def _ours() -> list[dict[str, Any]]:
    return [
        {"case": "matmul", "n": 1000, "threads": {"seconds": 1.0}},
        {"case": "sigmoid_taylor", "n": 1_000_000, "threads": {"seconds": 0.5}},
        {"case": "lr", "n": 10_000, "threads": {"seconds": 0.25}},
        {"case": "relu", "n": 100_000, "threads": {"seconds": 4.0}},
    ]


def test_spu_figures_from_the_subprocess_become_same_run_ratios(tmp_path: Path) -> None:
    fake = tmp_path / "python"  # stands in for .venv-spu/bin/python: prints what spu_workload prints
    payload = {
        "spu_version": "0.9.5",
        "results": [
            {"case": "matmul", "n": 1000, "seconds": 2.0},
            {"case": "sigmoid", "n": 1_000_000, "seconds": 10.0},
            {"case": "lr", "n": 10_000, "seconds": 1.0, "train_accuracy": 0.95},
        ],
    }
    fake.write_text(f"#!/bin/sh\necho 'log line'\necho '{json.dumps(payload)}'\n")
    fake.chmod(0o755)
    results = _ours()

    meta = bench_mpc._add_spu(results, fake, 1_000_000)

    assert meta == {"spu_version": "0.9.5"}
    by_case = {r["case"]: r for r in results}
    assert by_case["matmul"]["ratio_vs_spu"] == 0.5 and by_case["matmul"]["spu_s"] == 2.0
    assert by_case["sigmoid_taylor"]["ratio_vs_spu"] == 0.05
    assert by_case["lr"]["ratio_vs_spu"] == 0.25 and by_case["lr"]["spu_train_accuracy"] == 0.95
    assert "spu_s" not in by_case["relu"]  # SPU has no garbled circuits


def test_a_failing_spu_run_is_reported_and_leaves_our_figures_alone(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ImportError: no spu' >&2\nexit 3\n")
    fake.chmod(0o755)
    results = _ours()

    meta = bench_mpc._add_spu(results, fake, 1_000_000)

    assert meta is not None and "exit 3" in meta["error"] and "no spu" in meta["error"]
    assert all("spu_s" not in r for r in results)
    assert bench_mpc._add_spu(results, None, 1_000_000) is None
