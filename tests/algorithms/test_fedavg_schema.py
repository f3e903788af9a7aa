"""Horizontal checks before round 1 and prediction at every party (issue 17 item 3).

Data: scikit-learn's bundled iris and breast-cancer sets, split by hand between clients, as a new
user would; a mismatch must fail naming the party and the column (DataError, exit 3), never train.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris

from sharelearn.algorithms.evaluation import PredictParams
from sharelearn.algorithms.horizontal.fedavg import FedAvgParams
from sharelearn.core.errors import DataError, PartyFailed
from sharelearn.runtime.data import PartyData
from sharelearn.testing.steps import run_steps


def _table(x: np.ndarray, y: np.ndarray, names: list[str], tag: str) -> PartyData:
    ids = np.array([f"{tag}{i}" for i in range(len(y))], dtype=object)
    return PartyData(ids, x.astype(np.float64), y.astype(np.float64), tuple(names), Path(f"{tag}.csv"))


def _iris_parties(**change: Any) -> dict[str, tuple[str, PartyData | None]]:
    """Iris split in three: a test set at the server, two clients; `change` edits client b."""
    data = load_iris()
    order = np.random.default_rng(0).permutation(len(data.target))
    x, y, names = data.data[order], data.target[order], [str(n) for n in data.feature_names]
    parts = np.array_split(np.arange(len(y)), 3)
    xb, yb, nb = x[parts[2]], y[parts[2]], list(names)
    if "swap" in change:
        i, j = change["swap"]
        xb[:, [i, j]], nb[i], nb[j] = xb[:, [j, i]], nb[j], nb[i]
    if "rename" in change:
        nb[change["rename"]] = "petal width (in)"
    if "shift_labels" in change:
        yb = yb + 1  # labels 1..3 instead of 0..2
    return {
        "agg": ("server", _table(x[parts[0]], y[parts[0]], names, "t")),
        "a": ("client", _table(x[parts[1]], y[parts[1]], names, "a")),
        "b": ("client", _table(xb, yb, nb, "b")),
    }


def _fails(parties: dict[str, tuple[str, PartyData | None]], tmp_path: Path) -> str:
    with pytest.raises(PartyFailed) as info:
        run_steps(parties, [("fedavg", FedAvgParams(rounds=1))], tmp_path, timeout=30)
    assert isinstance(info.value.__cause__, DataError)  # exit 3 in the CLI's table
    return str(info.value)


def test_swapped_columns_at_a_client_fail_naming_party_and_column(tmp_path: Path) -> None:
    message = _fails(_iris_parties(swap=(0, 1)), tmp_path)
    assert "client 'b'" in message and "'sepal width (cm)' is at position 1" in message


def test_a_renamed_column_fails_naming_both_names(tmp_path: Path) -> None:
    message = _fails(_iris_parties(rename=3), tmp_path)
    assert "client 'b'" in message and "'petal width (cm)' is missing" in message


def test_labels_shifted_at_one_client_fail_instead_of_a_four_class_model(tmp_path: Path) -> None:
    message = _fails(_iris_parties(shift_labels=True), tmp_path)
    assert "client 'b''s label column has class 3" in message and "classes [0.0, 1.0, 2.0]" in message


def test_a_test_class_held_by_no_client_is_a_clear_error(tmp_path: Path) -> None:
    parties = _iris_parties()
    for name in ("a", "b"):  # drop class 2 from every client
        role, t = parties[name]
        assert t is not None and t.y is not None
        keep = np.flatnonzero(t.y != 2)
        parties[name] = (role, t.take(keep))
    message = _fails(parties, tmp_path)
    assert "class 2 of the server's test set (t.csv) is held by no client" in message


def test_every_client_predicts_its_own_rows_with_the_final_model(tmp_path: Path) -> None:
    data = load_breast_cancer()
    x = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    halves = np.array_split(np.random.default_rng(1).permutation(len(data.target)), 3)
    names = [str(n) for n in data.feature_names]
    parties: dict[str, tuple[str, PartyData | None]] = {
        "agg": ("server", _table(x[halves[0]], data.target[halves[0]], names, "t")),
        "a": ("client", _table(x[halves[1]], data.target[halves[1]], names, "a")),
        "b": ("client", _table(x[halves[2]], data.target[halves[2]], names, "b")),
    }
    params = FedAvgParams(rounds=3, secure_aggregation=True)
    run = run_steps(parties, [("fedavg", params), ("predict", PredictParams())], tmp_path, timeout=60)

    weights = [run.parties[p].model.weights for p in ("agg", "a", "b")]  # type: ignore[union-attr]
    assert all(np.array_equal(w, weights[0]) for w in weights)
    for party in ("a", "b"):
        out = run.parties[party].outputs["predict"]
        table = parties[party][1]
        assert table is not None and out["predicted_rows"] == len(table)
        with open(out["predictions"], newline="") as fh:
            rows = list(csv.reader(fh))
        assert [r[0] for r in rows[1:]] == list(table.ids)  # its own ids, in its own order
        scores = np.array([float(r[1]) for r in rows[1:]])
        accuracy = float(np.mean((scores > 0.5) == (table.y == 1)))
        assert accuracy > 0.9
