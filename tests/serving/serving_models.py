"""Small trained vertical models for the serving tests, and their batch `predict` scores.

Data: scikit-learn's bundled sets (breast cancer, iris, diabetes), columns split by hand between a
guest and one or two hosts. Each model is trained with the real steps (`run_steps`), saved as one
package per party, and scored by the batch `model.predict` of every party over the in-memory link:
the reference the online scores must equal.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from sharelearn.algorithms.context import StepContext
from sharelearn.algorithms.package import model_path
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams
from sharelearn.algorithms.vertical.secureboost import SecureBoostParams
from sharelearn.core.link import Link
from sharelearn.runtime.data import PartyData
from sharelearn.testing.roles import run_roles
from sharelearn.testing.steps import dataset, run_steps


@dataclass
class Trained:
    """A trained model: each party's package path, table and role, and the guest's batch scores."""

    packages: dict[str, Path]
    tables: dict[str, PartyData]
    roles: dict[str, str]
    batch_scores: np.ndarray
    step: str

    @property
    def hosts(self) -> list[str]:
        return [p for p, r in self.roles.items() if r == "host"]


def _bunch(task: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {"binary": load_breast_cancer, "multiclass": load_iris, "regression": load_diabetes}[task]
    b = loader()
    x = (b.data - b.data.mean(axis=0)) / b.data.std(axis=0)
    return x[:150], b.target[:150].astype(float) if task != "multiclass" else b.target.astype(float)


def _tables(task: str, hosts: int) -> dict[str, tuple[str, PartyData]]:
    x, y = _bunch(task)
    ids = np.array([f"u{i:04d}" for i in range(len(x))])
    cols = np.array_split(np.arange(x.shape[1]), hosts + 1)
    out = {"bank": ("guest", _named(dataset(ids.tolist(), x[:, cols[0]], y, name="bank.csv"), "g"))}
    for k in range(hosts):
        out[f"shop{k}"] = (
            "host",
            _named(dataset(ids.tolist(), x[:, cols[k + 1]], name=f"shop{k}.csv"), f"h{k}_"),
        )
    return out


def _named(table: PartyData, prefix: str) -> PartyData:
    from dataclasses import replace

    return replace(table, feature_names=tuple(f"{prefix}{i}" for i in range(table.x.shape[1])))


def _batch_predict(parties: Mapping[str, tuple[str, PartyData]], run: Any) -> np.ndarray:
    roles = {p: r for p, (r, _) in parties.items()}

    def body(party: str) -> Any:
        def fn(link: Link) -> Any:
            ctx = StepContext(
                link=link,
                party=party,
                roles=roles,
                data=parties[party][1],
                data_parties=list(parties),
                workdir=Path("."),
                aligned=True,
            )
            return run.parties[party].model.predict(ctx, parties[party][1])

        return fn

    return np.asarray(run_roles({p: body(p) for p in parties})["bank"])


def train(kind: str, task: str, hosts: int, workdir: Path) -> Trained:
    """Train `kind` (hetero_lr arbiter/two_party, secureboost) on `task` with `hosts` hosts."""
    parties = _tables(task, hosts)
    if kind.startswith("hetero_lr"):
        mode = "two_party" if kind.endswith("two_party") else "arbiter"
        params: Any = HeteroLrParams(
            epochs=3, batch_size=0, key_bits=1024, learning_rate=0.5, seed=1, mode=mode
        )
        if mode == "arbiter":
            parties = {**parties, "judge": ("arbiter", None)}  # type: ignore[dict-item]
        step = "hetero_lr"
    else:
        params = SecureBoostParams(num_trees=3, max_depth=3, max_bins=8, objective=task, key_bits=1024)  # type: ignore[arg-type]
        step = "secureboost"
    run = run_steps(parties, [(step, params)], workdir, aligned=True)
    data_parties = {p: v for p, v in parties.items() if v[1] is not None}
    scores = _batch_predict(data_parties, run) if step == "secureboost" else _batch_predict(parties, run)
    return Trained(
        {p: model_path(workdir / p, step) for p in data_parties},
        {p: t for p, (_, t) in data_parties.items()},
        {p: r for p, (r, _) in parties.items()},
        scores,
        step,
    )


def write_csv(table: PartyData, path: Path) -> Path:
    """A party's table as a CSV file (id column first), as a feature provider would read it."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *table.feature_names])
        for i, row in zip(table.ids, np.asarray(table.x), strict=True):
            w.writerow([i, *[repr(float(v)) for v in row]])
    return path
