"""In-enclave histogram GBDT (binary log-loss), streamed block by block under the memory cap.

Binning: exact per-feature quantile edges, computed a few columns at a time (a column group of
n floats fits the budget even when the whole table does not). Binned blocks (uint8) are spilled
encrypted. Trees grow level-wise to `max_depth` as complete binary trees: one streaming pass per
level accumulates gradient/hessian histograms per (node, feature, bin); a node without a positive
gain split sends every row left. Row state kept in memory is O(n): the margin and the node id.

The same code on one in-memory block is the pooled baseline (same library, no cap), so a delta
between the two measures only the effect of streaming.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sharelearn.algorithms.tee.data import BlockSource
from sharelearn.core.codec import decode, encode, expect_array
from sharelearn.core.errors import ConfigError

__all__ = ["GbdtModel", "GbdtParams", "bin_edges", "train_gbdt"]


@dataclass(frozen=True, slots=True)
class GbdtParams:
    """Boosting parameters (FATE's default_credit benchmark: 30 trees, depth 3, 32 bins)."""

    num_trees: int = 30
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bin: int = 32
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.num_trees <= 10_000:
            raise ConfigError(f"tee_train.num_trees must be in 1..10000, got {self.num_trees}")
        if not 1 <= self.max_depth <= 12:
            raise ConfigError(f"tee_train.max_depth must be in 1..12, got {self.max_depth}")
        if not 2 <= self.max_bin <= 255:
            raise ConfigError(f"tee_train.max_bin must be in 2..255, got {self.max_bin}")
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(f"tee_train.learning_rate must be in (0, 1], got {self.learning_rate}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def bin_edges(src: BlockSource, max_bin: int) -> list[np.ndarray]:
    """Exact quantile edges per feature, gathering a budget-sized group of columns per pass."""
    per_col = src.n_rows * 8
    group = max(1, int(src.budget.cap * 0.3) // max(per_col, 1))
    qs = np.linspace(0, 1, max_bin + 1)[1:-1]
    edges: list[np.ndarray] = []
    for start in range(0, src.n_features, group):
        cols = list(range(start, min(start + group, src.n_features)))
        with src.budget.hold(per_col * len(cols), f"feature columns {cols[0]}..{cols[-1]}"):
            buf = np.concatenate([x[:, cols] for x, _ in src.blocks()], axis=0)
            for j in range(len(cols)):
                edges.append(np.unique(np.quantile(buf[:, j], qs, method="linear")))
    return edges


def _binned(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.uint8)
    for j, e in enumerate(edges):
        out[:, j] = np.searchsorted(e, x[:, j], side="right")
    return out


@dataclass
class GbdtModel:
    """Complete binary trees in level order: feature (-1 never used), bin threshold, leaf values."""

    edges: list[np.ndarray]
    base: float
    learning_rate: float
    max_depth: int
    feats: list[np.ndarray] = field(default_factory=list)
    thrs: list[np.ndarray] = field(default_factory=list)
    leaves: list[np.ndarray] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    kind: str = "gbdt"

    def _leaf_index(self, bins: np.ndarray, t: int) -> np.ndarray:
        node = np.zeros(bins.shape[0], dtype=np.int64)
        rows = np.arange(bins.shape[0])
        for _ in range(self.max_depth):
            f, thr = self.feats[t][node], self.thrs[t][node]
            node = 2 * node + 1 + (bins[rows, f] > thr)
        return np.asarray(node - (2**self.max_depth - 1), dtype=np.int64)

    def predict_block(self, x: np.ndarray) -> np.ndarray:
        bins = _binned(x, self.edges)
        z = np.full(x.shape[0], self.base)
        for t in range(len(self.feats)):
            z += self.learning_rate * self.leaves[t][self._leaf_index(bins, t)]
        return _sigmoid(z)

    def to_bytes(self) -> bytes:
        return encode(
            {
                "kind": "gbdt",
                "edges": [e.astype(np.float64) for e in self.edges],
                "base": self.base,
                "lr": self.learning_rate,
                "depth": self.max_depth,
                "feats": np.array(self.feats, dtype=np.int64),
                "thrs": np.array(self.thrs, dtype=np.int64),
                "leaves": np.array(self.leaves, dtype=np.float64),
            }
        )

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> GbdtModel:
        edges = [expect_array(e, peer="model", tag="edges", dtype=np.float64) for e in msg["edges"]]
        feats = expect_array(msg["feats"], peer="model", tag="feats", dtype=np.int64)
        thrs = expect_array(msg["thrs"], peer="model", tag="thrs", dtype=np.int64)
        leaves = expect_array(msg["leaves"], peer="model", tag="leaves", dtype=np.float64)
        depth = int(msg["depth"])
        if feats.ndim != 2 or feats.shape[1] != 2**depth - 1 or leaves.shape[1:] != (2**depth,):
            raise ConfigError("gbdt model arrays do not match max_depth")
        if feats.size and (feats.min() < 0 or feats.max() >= len(edges)):
            raise ConfigError("gbdt model uses a feature outside its bin edges")
        return cls(edges, float(msg["base"]), float(msg["lr"]), depth, list(feats), list(thrs), list(leaves))


def train_gbdt(src: BlockSource, params: GbdtParams) -> GbdtModel:
    """Train level-wise with one streaming pass per level over spilled binned blocks."""
    edges = bin_edges(src, params.max_bin)
    n = src.n_rows
    positives = 0.0
    for k, (x, y) in enumerate(src.blocks()):
        src.spill.append(f"bins_{k}", encode({"b": _binned(x, edges), "y": y}))
        positives += float(y.sum())
    p0 = min(max(positives / n, 1e-6), 1 - 1e-6)
    model = GbdtModel(edges, float(np.log(p0 / (1 - p0))), params.learning_rate, params.max_depth)
    src.budget.reserve(n * 16, "margin and node ids")  # O(n) row state
    state = _Rows(np.full(n, model.base), np.zeros(n, dtype=np.int64))
    losses: list[float] = []
    try:
        for _ in range(params.num_trees):
            feat, thr, values, loss = _grow_tree(src, params, state)
            state.margin += params.learning_rate * values[state.node - (2**params.max_depth - 1)]
            model.feats.append(feat)
            model.thrs.append(thr)
            model.leaves.append(values)
            losses.append(loss / n)
    finally:
        src.budget.release(n * 16)
        for k in range(src.n_blocks):
            src.spill.remove(f"bins_{k}")
    model.history = {"loss": losses}
    return model


@dataclass
class _Rows:
    """Per-row training state held in the enclave: current margin and node of the growing tree."""

    margin: np.ndarray
    node: np.ndarray


def _grow_tree(
    src: BlockSource, params: GbdtParams, state: _Rows
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One tree, level by level: (split features, thresholds, leaf values, summed log-loss)."""
    n_internal = 2**params.max_depth - 1
    feat = np.zeros(n_internal, dtype=np.int64)
    thr = np.full(n_internal, params.max_bin, dtype=np.int64)
    state.node[:] = 0
    for depth in range(params.max_depth):
        hist = _level_histogram(src, params, state, feat, thr, depth)
        _choose_splits(hist, params, depth, feat, thr)
    (leaf_g, leaf_h), loss = _leaf_sums(src, params, state, feat, thr)
    return feat, thr, -leaf_g / (leaf_h + params.reg_lambda), loss


def _route(state: _Rows, rows: slice, bins: np.ndarray, feat: np.ndarray, thr: np.ndarray) -> None:
    """Move the rows of a block one level down the tree being grown."""
    prev = state.node[rows]
    f, t = feat[prev], thr[prev]
    state.node[rows] = 2 * prev + 1 + (bins[np.arange(bins.shape[0]), f] > t)


def _level_histogram(
    src: BlockSource, params: GbdtParams, state: _Rows, feat: np.ndarray, thr: np.ndarray, depth: int
) -> np.ndarray:
    """Gradient and hessian histograms (2, width * features * bins) of one level, streamed."""
    first, width, nf, nbins = 2**depth - 1, 2**depth, src.n_features, params.max_bin
    hist = np.zeros((2, width * nf * nbins))
    for bins, y, lo in _binned_blocks(src):
        rows = slice(lo, lo + bins.shape[0])
        if depth > 0:
            _route(state, rows, bins, feat, thr)
        p = _sigmoid(state.margin[rows])
        g, h = p - y, p * (1 - p)
        idx = ((state.node[rows] - first)[:, None] * nf + np.arange(nf)) * nbins + bins
        hist[0] += np.bincount(idx.ravel(), np.repeat(g, nf), width * nf * nbins)
        hist[1] += np.bincount(idx.ravel(), np.repeat(h, nf), width * nf * nbins)
    return hist


def _choose_splits(
    hist: np.ndarray, params: GbdtParams, depth: int, feat: np.ndarray, thr: np.ndarray
) -> None:
    """Best (feature, threshold) per node of the level by the XGBoost gain; no split if none gains."""
    first, width, nbins = 2**depth - 1, 2**depth, params.max_bin
    lam, mcw = params.reg_lambda, params.min_child_weight
    hg = hist[0].reshape(width, -1, nbins)
    hh = hist[1].reshape(width, -1, nbins)
    gl, hl = np.cumsum(hg, axis=2)[:, :, :-1], np.cumsum(hh, axis=2)[:, :, :-1]
    gt, ht = hg.sum(axis=2)[:, :, None], hh.sum(axis=2)[:, :, None]
    gr, hr = gt - gl, ht - hl
    gain = gl**2 / (hl + lam) + gr**2 / (hr + lam) - gt**2 / (ht + lam)
    gain[(hl < mcw) | (hr < mcw)] = -np.inf
    flat = gain.reshape(width, -1)
    best = np.argmax(flat, axis=1)
    for i in range(width):
        if np.isfinite(flat[i, best[i]]) and flat[i, best[i]] > 1e-12:
            feat[first + i], thr[first + i] = divmod(int(best[i]), nbins - 1)


def _leaf_sums(
    src: BlockSource, params: GbdtParams, state: _Rows, feat: np.ndarray, thr: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Route rows to the leaves; per-leaf gradient and hessian sums and the log-loss before the tree."""
    depth = params.max_depth
    first, width = 2**depth - 1, 2**depth
    leaf_g, leaf_h, loss = np.zeros(width), np.zeros(width), 0.0
    for bins, y, lo in _binned_blocks(src):
        rows = slice(lo, lo + bins.shape[0])
        if depth > 0:
            _route(state, rows, bins, feat, thr)
        margin = state.margin[rows]
        p = _sigmoid(margin)
        local = state.node[rows] - first
        leaf_g += np.bincount(local, p - y, width)
        leaf_h += np.bincount(local, p * (1 - p), width)
        loss += float(np.sum(np.logaddexp(0.0, margin) - y * margin))
    return (leaf_g, leaf_h), loss


def _binned_blocks(src: BlockSource) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    lo = 0
    for k in range(src.n_blocks):
        (rec,) = list(src.spill.records(f"bins_{k}"))
        msg = decode(rec, peer="spill", tag=f"bins_{k}")
        assert isinstance(msg, dict)  # invariant: written by this enclave, authenticated
        bins = expect_array(msg["b"], peer="spill", tag="bins", dtype=np.uint8)
        y = expect_array(msg["y"], peer="spill", tag="y", dtype=np.float64)
        with src.budget.hold(bins.nbytes * 17 + y.nbytes * 4, f"binned block {k}"):
            yield bins, y, lo
        lo += bins.shape[0]
