"""`bench fedavg`: a small same-run timing, the Flower subprocess plumbing, and that
`flower_workload.py` (which runs in Flower's own venv) sets up the very workload we time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks import bench_fedavg, flower_workload
from sharelearn.algorithms.horizontal.fedavg import secagg_config

PLAIN = {"flwr": "1.42.0", "cpus": 1, "round_time_s": 2.0, "first_round_s": 9.0, "test_auc": 0.7}
SECURE = {
    **PLAIN,
    "round_time_s": 3.0,
    "secagg": {"num_shares": 10, "reconstruction_threshold": 6, "dropouts_per_round": [1, 1, 1]},
}


def _row(clients: int = 10, neighbours: int = 9) -> dict[str, Any]:
    return {
        "clients": clients,
        "rounds": 3,
        "compute": "local",
        "plain_round_s": 0.5,
        "secagg_round_s": 0.6,
        "secagg_neighbours": neighbours,
    }


def _fake_flower(tmp_path: Path, plain: str, secure: str) -> Path:
    """Stand in for .venv-flower/bin/python: log the argv, run `secure` or `plain` (shell) by mode."""
    fake = tmp_path / "python"
    log = tmp_path / "argv.log"
    fake.write_text(
        f"#!/bin/sh\necho \"$*\" >> {log}\necho 'INFO: starting'\n"
        f'case "$*" in *--secagg-shares*) {secure};; *) {plain};; esac\n'
    )
    fake.chmod(0o755)
    return fake


def _argv(tmp_path: Path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "argv.log").read_text().splitlines()]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_flower_figures_from_the_subprocess_become_same_run_ratios(tmp_path: Path) -> None:
    fake = _fake_flower(tmp_path, f"echo '{json.dumps(PLAIN)}'", f"echo '{json.dumps(SECURE)}'")
    row = _row()

    bench_fedavg.add_flower(row, fake)

    assert row["flower"] == PLAIN and row["flower_secagg"] == SECURE
    assert row["flower_ratio"] == 0.25 and row["secagg_vs_flower"] == 0.3
    assert row["secagg_vs_flower_secagg"] == 0.2 and row["flower_secagg_overhead"] == 1.5
    text = bench_fedavg._flower_text(row)
    assert "Flower 1.42.0 (1 CPU) 2.000 s/round" in text
    assert "Flower SecAgg+ (S=10, T=6, 1 dropout/round) 3.000 s/round" in text
    assert "ours secagg / Flower secagg 0.20x, Flower secagg / Flower plain 1.50x" in text


def test_flower_secagg_gets_our_share_holders_threshold_and_dropped_client(tmp_path: Path) -> None:
    fake = _fake_flower(tmp_path, f"echo '{json.dumps(PLAIN)}'", f"echo '{json.dumps(SECURE)}'")

    bench_fedavg.add_flower(_row(10, 9), fake)  # 10 clients, 16 neighbours asked: the full graph
    bench_fedavg.add_flower(_row(100, 16), fake)

    plain_10, secure_10, plain_100, secure_100 = _argv(tmp_path)
    assert "--secagg-shares" not in plain_10 and "--drop-client" not in plain_100
    assert (_option(secure_10, "--secagg-shares"), _option(secure_10, "--secagg-threshold")) == ("10", "6")
    assert (_option(secure_100, "--secagg-shares"), _option(secure_100, "--secagg-threshold")) == ("17", "9")
    assert _option(secure_10, "--drop-client") == _option(secure_100, "--drop-client") == "1"  # c0001
    for n, neighbours in ((10, 9), (100, 16), (100, 99), (7, 3)):
        params = bench_fedavg._params(True, n, 1, neighbours, "local")
        cfg = secagg_config(params, n, 1, 0)
        shares, threshold, _ = bench_fedavg.flower_secagg_shape(n, neighbours)
        assert shares == cfg.holders == (n if neighbours >= n - 1 else neighbours + neighbours % 2 + 1)
        assert threshold == cfg.threshold == shares // 2 + 1


def test_a_failing_flower_secagg_is_reported_and_leaves_the_plain_figures_alone(tmp_path: Path) -> None:
    fake = _fake_flower(tmp_path, f"echo '{json.dumps(PLAIN)}'", "echo 'ValueError: num_shares' >&2; exit 3")
    row = _row()

    bench_fedavg.add_flower(row, fake)

    assert row["flower"] == PLAIN and row["flower_ratio"] == 0.25 and row["secagg_vs_flower"] == 0.3
    assert "exited 3" in row["flower_secagg"]["error"] and "num_shares" in row["flower_secagg"]["error"]
    assert "secagg_vs_flower_secagg" not in row and "flower_secagg_overhead" not in row
    assert row["plain_round_s"] == 0.5 and row["secagg_round_s"] == 0.6
    assert "Flower SecAgg+ failed: flower_workload exited 3" in bench_fedavg._flower_text(row)


def test_a_failing_flower_plain_run_leaves_the_secagg_comparison(tmp_path: Path) -> None:
    fake = _fake_flower(
        tmp_path, 'echo \'{"error": "RuntimeError: ray"}\'; exit 1', f"echo '{json.dumps(SECURE)}'"
    )
    row = _row()

    bench_fedavg.add_flower(row, fake)

    assert row["flower"] == {"error": "RuntimeError: ray"} and "flower_ratio" not in row
    assert row["secagg_vs_flower_secagg"] == 0.2 and "flower_secagg_overhead" not in row
    text = bench_fedavg._flower_text(row)
    assert "Flower failed: RuntimeError: ray" in text and "Flower secagg / Flower plain n/a" in text


def test_a_failing_or_missing_flower_is_reported_and_leaves_our_figures_alone(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: flwr' >&2\nexit 2\n")
    fake.chmod(0o755)
    row = _row()

    bench_fedavg.add_flower(row, fake)
    assert "exit" in row["flower"]["error"] and "flwr" in row["flower"]["error"]
    assert "exit" in row["flower_secagg"]["error"]
    assert "flower_ratio" not in row and "secagg_vs_flower_secagg" not in row and row["plain_round_s"] == 0.5

    missing = _row()
    bench_fedavg.add_flower(missing, None)
    assert "benchmarks/envs/flower.sh" in missing["flower"] and "flower_ratio" not in missing
    assert missing["flower_secagg"] == missing["flower"]


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
    assert row["flower"] == row["flower_secagg"] == "not run (--no-flower)"


def test_flower_workload_takes_secagg_shares_and_threshold_together() -> None:
    data = str(bench_fedavg.DATA)
    for argv in (
        ["--data", data, "--secagg-shares", "17"],
        ["--data", data, "--secagg-threshold", "9"],
        ["--data", data, "--drop-client", "1"],
        [
            "--data",
            data,
            "--clients",
            "10",
            "--secagg-shares",
            "10",
            "--secagg-threshold",
            "6",
            "--drop-client",
            "10",
        ],
    ):
        with pytest.raises(SystemExit) as exc:
            flower_workload.main(argv)
        assert exc.value.code == 2


def test_kernel_figures_time_every_available_backend_and_restore_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sharelearn.crypto import maskadd, prg
    from sharelearn.crypto.kernels import mbx

    out = bench_fedavg.kernel_figures(neighbours=4, calls=2)

    assert out["words"] == 98_453 and out["masks"] == 5 and out["agreements"] == 8
    assert out["shamir_elements"] == 12 + 7 and out["shamir_split_us"] > 0
    # The portable paths always run; the fast ones wherever this machine has them.
    assert out["mask_openssl_us"] > 0 and out["x25519_openssl_us"] > 0
    assert ("mask_fused_us" in out) == (maskadd.backend() == "fused")
    assert ("x25519_mbx_us" in out) == mbx.is_available()
    assert maskadd.backend() in ("fused", prg.keystream_backend()) and not mbx._state["forced"]
    assert bench_fedavg.main(["--kernels", "--neighbours", "2"]) == 0
    assert "3 masks over 98453 words" in capsys.readouterr().out
