"""Shared helpers of the SecureBoost tests: FATE datasets, a plaintext reference booster."""

from __future__ import annotations

import numpy as np

from sharelearn.algorithms.vertical import tree_kernels as tk
from sharelearn.algorithms.vertical.secureboost import SecureBoostParams
from sharelearn.runtime.data import PartyData
from sharelearn.testing.steps import load_csv
from tests.datasets import fate_file

__all__ = ["fate_pair", "reference_margins"]


def fate_pair(name: str, rows: int | None = None) -> tuple[PartyData, PartyData]:
    """Guest and host tables of a FATE hetero dataset, sorted by id (the order pool_vertical uses)."""
    guest = load_csv(fate_file(f"{name}_hetero_guest.csv"), label="y")
    host = load_csv(fate_file(f"{name}_hetero_host.csv"))
    guest = guest.take(np.argsort(guest.ids, kind="stable"))
    host = host.take(np.argsort(host.ids, kind="stable"))
    if rows is not None:
        guest, host = guest.take(np.arange(rows)), host.take(np.arange(rows))
    return guest, host


def _grow(bins: np.ndarray, g: np.ndarray, h: np.ndarray, p: SecureBoostParams) -> np.ndarray:
    rows = {0: np.arange(len(g))}
    level, next_id = [0], 1
    for _ in range(p.max_depth):
        nxt = []
        for nd in level:
            r = rows[nd]
            hist = tk.histogram(bins, g, h, r, p.max_bins)
            c = tk.best_split(
                hist,
                g[r].sum(),
                h[r].sum(),
                lam=p.reg_lambda,
                gamma=p.gamma,
                min_child_weight=p.min_child_weight,
            )
            if c is None:
                continue
            mask = bins[r, c.feature] <= c.bin
            rows[next_id], rows[next_id + 1] = r[mask], r[~mask]
            del rows[nd]
            nxt += [next_id, next_id + 1]
            next_id += 2
        level = nxt
    out = np.zeros(len(g))
    for r in rows.values():
        out[r] = p.learning_rate * tk.leaf_weight(g[r].sum(), h[r].sum(), p.reg_lambda)
    return out


def reference_margins(x: np.ndarray, y: np.ndarray, p: SecureBoostParams, base: list[float]) -> np.ndarray:
    """The same boosting in plaintext on pooled features: training margins (n, k)."""
    bins, _ = tk.bin_features(x, p.max_bins)
    k = len(base)
    margin = np.tile(np.asarray(base, dtype=np.float64), (len(y), 1))
    objective = p.objective
    for _ in range(p.num_trees):
        g, h = tk.gradients(objective, y, margin if objective == "multiclass" else margin[:, 0])
        g, h = g.reshape(len(y), -1), h.reshape(len(y), -1)
        for c in range(k):
            margin[:, c] += _grow(bins, g[:, c], h[:, c], p)
    return margin
