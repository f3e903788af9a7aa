from __future__ import annotations

import json

import pytest

from benchmarks import bench_hetero_lr

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(240)]


def test_bench_runs_end_to_end_on_a_small_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--dataset",
        "breast",
        "--bits",
        "1024",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--schemes",
        "ou",
    ]
    assert bench_hetero_lr.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ou = result["ou"]
    assert ou["s_per_epoch"] > 0 and ou["vs_plaintext"] > 1
    assert set(ou["he_share"]) == {"bank", "shop", "coord"} and 0 < ou["he_share"]["bank"] < 1
    assert ou["auc"] > 0.95 and ou["auc_delta"] < 0.03


def test_secureboost_bench_runs_end_to_end_on_a_small_configuration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks import bench_secureboost

    argv = ["--dataset", "breast", "--bits", "1024", "--trees", "2", "--schemes", "ou", "--json"]
    assert bench_secureboost.main(argv) == 0
    ou = json.loads(capsys.readouterr().out)["ou"]
    assert ou["s_per_tree"] > 0 and set(ou["per_tree_s"]) >= {"encrypt", "histogram", "decrypt"}
    assert ou["auc"] > 0.95 and ou["auc_delta"] < 0.03
