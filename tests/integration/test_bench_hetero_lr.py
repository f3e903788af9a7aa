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
