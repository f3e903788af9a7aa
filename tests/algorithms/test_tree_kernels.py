from __future__ import annotations

import numpy as np
import pytest

from sharelearn.algorithms.vertical import tree_kernels as tk
from sharelearn.core.errors import DataError


def test_bins_put_every_value_at_or_below_its_edge_with_at_most_max_bins() -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=1000), rng.integers(0, 3, 1000).astype(float)])

    bins, edges = tk.bin_features(x, 16)

    assert len(edges[0]) <= 16 and list(edges[1]) == [0.0, 1.0, 2.0]
    for j in range(2):
        assert np.all(x[:, j] <= edges[j][bins[:, j]])
        lower = np.where(bins[:, j] > 0, edges[j][np.maximum(bins[:, j] - 1, 0)], -np.inf)
        assert np.all(x[:, j] > lower)
    counts = np.bincount(bins[:, 0])
    assert counts.max() < 2 * 1000 / 16


def test_binning_rejects_nan_naming_the_column() -> None:
    x = np.array([[1.0, 2.0], [3.0, np.nan]])

    with pytest.raises(DataError, match="column 1 .* row 1"):
        tk.bin_features(x, 4, name="host.csv")


def test_histogram_and_best_split_match_brute_force() -> None:
    rng = np.random.default_rng(2)
    bins = rng.integers(0, 6, size=(200, 3)).astype(np.int32)
    g, h = rng.normal(size=200), rng.uniform(0.1, 1.0, 200)
    rows = np.arange(0, 200, 2)

    hist = tk.histogram(bins, g, h, rows, 6)
    best = tk.best_split(hist, g[rows].sum(), h[rows].sum(), lam=1.0, gamma=0.0, min_child_weight=1.0)

    want = max(
        (
            0.5 * (gl**2 / (hl + 1) + (g[rows].sum() - gl) ** 2 / (h[rows].sum() - hl + 1))
            - 0.5 * g[rows].sum() ** 2 / (h[rows].sum() + 1),
            f,
            b,
        )
        for f in range(3)
        for b in range(5)
        for gl, hl in [(g[rows][bins[rows, f] <= b].sum(), h[rows][bins[rows, f] <= b].sum())]
        if hl >= 1 and h[rows].sum() - hl >= 1
    )
    assert best is not None
    assert (best.feature, best.bin) == (want[1], want[2])
    assert best.gain == pytest.approx(want[0])
    np.testing.assert_allclose(hist[1, bins[rows[0], 1], 0], g[rows][bins[rows, 1] == bins[rows[0], 1]].sum())


def test_gamma_and_min_child_weight_block_weak_splits() -> None:
    hist = np.array([[[-1.0, 1.0], [1.0, 1.0]]])

    assert tk.best_split(hist, 0.0, 2.0, lam=1.0, gamma=0.0, min_child_weight=1.0) is not None
    assert tk.best_split(hist, 0.0, 2.0, lam=1.0, gamma=10.0, min_child_weight=1.0) is None
    assert tk.best_split(hist, 0.0, 2.0, lam=1.0, gamma=0.0, min_child_weight=1.5) is None


@pytest.mark.parametrize("objective", ["binary", "regression", "multiclass"])
def test_gradients_match_finite_differences(objective: str) -> None:
    rng = np.random.default_rng(3)
    margin = rng.normal(size=(5, 3)) if objective == "multiclass" else rng.normal(size=5)
    y = rng.integers(0, 3 if objective == "multiclass" else 2, 5).astype(float)

    def loss(m: np.ndarray) -> float:
        if objective == "binary":
            return float(np.sum(np.logaddexp(0, m) - y * m))
        if objective == "regression":
            return float(0.5 * np.sum((m - y) ** 2))
        z = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return float(-z[np.arange(5), y.astype(int)].sum())

    g, _ = tk.gradients(objective, y, margin)

    eps = 1e-6
    numeric = np.zeros_like(margin)
    for idx in np.ndindex(margin.shape):
        bump = np.zeros_like(margin)
        bump[idx] = eps
        numeric[idx] = (loss(margin + bump) - loss(margin - bump)) / (2 * eps)
    np.testing.assert_allclose(g, numeric, atol=1e-5)
