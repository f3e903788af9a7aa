"""The launcher's centralised references: the same-budget twin and the converged pooled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from sharelearn.algorithms.registry import step_params
from sharelearn.runtime.jobspec import load_job
from sharelearn.runtime.report import add_centralized

pytestmark = pytest.mark.timeout(120)


def _job(folder: Path, steps: str) -> Path:
    x, y = load_breast_cancer(return_X_y=True)
    ids = [f"p{i}" for i in range(len(y))]
    guest = ["id,y," + ",".join(f"g{k}" for k in range(10))]
    guest += [
        f"{i},{int(v)}," + ",".join(f"{a:.6g}" for a in row[:10]) for i, v, row in zip(ids, y, x, strict=True)
    ]
    host = ["id," + ",".join(f"h{k}" for k in range(20))]
    host += [
        f"{i}," + ",".join(f"{a:.6g}" for a in row[10:]) for i, row in zip(ids[::-1], x[::-1], strict=True)
    ]
    (folder / "g.csv").write_text("\n".join(guest) + "\n")
    (folder / "h.csv").write_text("\n".join(host) + "\n")
    (folder / "job.yaml").write_text(
        "seed: 3\nparties:\n  bank: {role: guest, data: {path: g.csv, label: y}}\n"
        f"  shop: {{role: host, data: h.csv}}\n  coord: {{role: arbiter}}\nsteps:\n{steps}"
    )
    return folder / "job.yaml"


def test_evaluate_reports_the_twin_and_the_converged_model_with_both_deltas(tmp_path: Path) -> None:
    steps = "  - psi: {}\n  - split: {test: 0.3, train: 0.7}\n  - hetero_lr: {epochs: 1}\n  - evaluate: {}\n"
    job = load_job(_job(tmp_path, steps), step_params=step_params())
    out = {"evaluate": {"auc": 0.9, "accuracy": 0.8}}

    add_centralized(job, out)

    ev = out["evaluate"]
    assert {"auc_centralized", "auc_delta", "auc_converged", "auc_converged_delta"} <= ev.keys()
    assert ev["auc_converged_delta"] == pytest.approx(abs(0.9 - ev["auc_converged"]), abs=1e-6)
    assert 0.97 < ev["auc_converged"] <= 1.0
    assert np.isfinite(ev["accuracy_converged"])
