from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.package import load_package
from sharelearn.algorithms.vertical.secureboost import MODEL_FILE
from sharelearn.interfaces.api import run_job
from sharelearn.runtime.control import ControlEvent, Listening, Progress
from tests.datasets import fate_file

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(240)]

PARAMS = (
    "num_trees: 4, max_depth: 3, max_bins: 32, key_bits: 1024, subsample: 0.8, seed: 3,"
    " learning_rate: 0.3, validation_fraction: 0, early_stopping_rounds: 0"
)


def _job(folder: Path, name: str, steps: str, *, arbiter: bool = False) -> Path:
    job = folder / f"{name}.yaml"
    job.write_text(
        f"job: {name}\ntimeout_s: 60\nparties:\n"
        f"  bank: {{role: guest, data: {{path: {fate_file('breast_hetero_guest.csv')}, id: id, label: y}}}}\n"
        f"  shop: {{role: host, data: {{path: {fate_file('breast_hetero_host.csv')}, id: id}}}}\n"
        + ("  coord: {role: arbiter}\n" if arbiter else "")
        + f"steps:\n{steps}"
    )
    return job


def _train_steps(extra: str = "") -> str:
    return f"  - psi: {{}}\n  - secureboost: {{{PARAMS}{extra}}}\n  - evaluate: {{plots: false}}\n"


def _trees(report: Path) -> dict[str, np.ndarray]:
    return load_package(report / "parties" / "bank" / MODEL_FILE).arrays


def test_breast_across_processes_matches_pooled_xgboost_and_predicts_offline(tmp_path: Path) -> None:
    report = tmp_path / "report"

    summary = run_job(_job(tmp_path, "train", _train_steps(), arbiter=True), report_dir=report)

    assert summary["status"] == "success", summary["error"]
    evaluate = summary["steps"]["evaluate"]
    assert evaluate["auc"] > 0.97 and evaluate["auc_delta"] <= 0.01
    assert summary["wire"]["leaks"] == 0
    assert (report / "parties" / "shop" / MODEL_FILE).is_file()
    template = str(report / "parties" / "{party}" / MODEL_FILE)
    later = run_job(
        _job(tmp_path, "score", f"  - psi: {{}}\n  - predict: {{model: '{template}', step: secureboost}}\n"),
        report_dir=tmp_path / "later",
    )
    assert later["status"] == "success", later["error"]
    lines = (tmp_path / "later" / "parties" / "bank" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,score" and len(lines) == 570


def test_host_killed_after_tree_two_resumes_to_the_uninterrupted_model(tmp_path: Path) -> None:
    reference = run_job(_job(tmp_path, "reference", _train_steps()), report_dir=tmp_path / "reference")
    assert reference["status"] == "success", reference["error"]
    pids: dict[str, int] = {}
    killed: list[str] = []

    def on_event(event: ControlEvent) -> None:
        if isinstance(event, Listening):
            pids[event.party] = event.pid
        checkpointed = isinstance(event, Progress) and "tree 2 checkpointed" in event.message
        if event.party == "shop" and checkpointed and not killed:
            os.kill(pids["shop"], signal.SIGKILL)
            killed.append("shop")

    crashed = run_job(_job(tmp_path, "crash", _train_steps()), report_dir=tmp_path / "run", on_event=on_event)
    resumed = run_job(_job(tmp_path, "resume", _train_steps(", resume: true")), report_dir=tmp_path / "run")

    assert killed and crashed["status"] == "failed" and "'shop'" in crashed["error"]
    assert resumed["status"] == "success", resumed["error"]
    assert resumed["steps"]["secureboost"]["resumed_from"] == 2
    want, got = _trees(tmp_path / "reference"), _trees(tmp_path / "run")
    for key in want:
        np.testing.assert_array_equal(want[key], got[key])
    assert resumed["steps"]["evaluate"]["auc"] == reference["steps"]["evaluate"]["auc"]
