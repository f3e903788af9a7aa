"""`bench fedavg`: a small same-run timing, the Flower subprocess plumbing, and that
`flower_workload.py` (which runs in Flower's own venv) sets up the very workload we time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks import bench_fedavg, flower_workload


def _row() -> dict[str, Any]:
    return {"clients": 10, "rounds": 3, "compute": "local", "plain_round_s": 0.5, "secagg_round_s": 0.6}


def test_flower_figures_from_the_subprocess_become_same_run_ratios(tmp_path: Path) -> None:
    fake = tmp_path / "python"  # stands in for .venv-flower/bin/python: prints what flower_workload prints
    payload = {"flwr": "1.42.0", "cpus": 1, "round_time_s": 2.0, "first_round_s": 9.0, "test_auc": 0.7}
    fake.write_text(f"#!/bin/sh\necho 'INFO: starting'\necho '{json.dumps(payload)}'\n")
    fake.chmod(0o755)
    row = _row()

    bench_fedavg.add_flower(row, fake)

    assert row["flower"] == payload
    assert row["flower_ratio"] == 0.25 and row["secagg_vs_flower"] == 0.3
    assert "Flower 1.42.0 (1 CPU) 2.000 s/round" in bench_fedavg._flower_text(row)


def test_a_failing_or_missing_flower_is_reported_and_leaves_our_figures_alone(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: flwr' >&2\nexit 2\n")
    fake.chmod(0o755)
    row = _row()

    bench_fedavg.add_flower(row, fake)
    assert "exit" in row["flower"]["error"] and "flwr" in row["flower"]["error"]
    assert "flower_ratio" not in row and row["plain_round_s"] == 0.5

    missing = _row()
    bench_fedavg.add_flower(missing, None)
    assert "benchmarks/envs/flower.sh" in missing["flower"] and "flower_ratio" not in missing


def test_flower_workload_uses_the_same_split_and_a_correct_auc() -> None:
    clients, (x_test, y_test) = flower_workload.load_workload(bench_fedavg.DATA, 7)
    assert np.array_equal(y_test, np.asarray(bench_fedavg._pooled()[1].y, dtype=np.float64))
    pooled, test = bench_fedavg._pooled()
    shards = np.array_split(np.random.default_rng(7).permutation(len(pooled)), 7)
    for (x, y), shard in zip(clients, shards, strict=True):
        ours = pooled.take(np.sort(shard))
        assert np.allclose(x, ours.x) and np.array_equal(y, np.asarray(ours.y, dtype=np.float64))
    assert np.allclose(x_test, test.x) and x_test.shape == (6000, 23)
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=500), 1)  # ties, as a real model's scores can have
    labels = (scores + rng.normal(size=500) > 0).astype(np.float64)
    assert abs(flower_workload.auc(labels, scores) - roc_auc_score(labels, scores)) < 1e-12


def test_bench_times_plain_and_secure_rounds_in_the_same_run(capsys: Any) -> None:
    argv = ["--clients", "3", "--rounds", "1", "--repeat", "1", "--no-flower", "--json"]
    assert bench_fedavg.main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["clients"] == 3 and row["parameters"] == 98449
    assert row["plain_round_s"] > 0 and row["secagg_round_s"] > 0 and row["round_time_ratio"] > 0
    assert row["secagg_dropouts"] == row["plain_dropouts"] == 1  # the same client leaves in both
    assert row["flower"] == "not run (--no-flower)"
