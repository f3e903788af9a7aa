"""`sharelearn bench paillier` runs end to end on small keys and reports the hardware probe."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_paillier


@pytest.mark.timeout(120)
def test_bench_reports_every_op_and_the_core_probe(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--bits", "1024", "--n", "24", "--schemes", "ou", "--json", "--probe-seconds", "0.2"]

    assert bench_paillier.main(argv) == 0

    out = json.loads(capsys.readouterr().out)
    (ou,) = out["schemes"]
    assert set(ou["1core"]) == {"encrypt", "decrypt", "add", "mul_scalar63"}
    assert all(v > 0 for v in ou["1core"].values())
    if out["cores"] > 1:
        assert out["core_scaling"]["gmpy2"] > 0.5  # processes ran the loop at once
