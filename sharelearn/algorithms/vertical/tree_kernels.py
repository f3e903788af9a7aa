"""Plain numpy kernels of gradient-boosted trees (XGBoost's second-order formulas, Chen & Guestrin 2016).

Binning: each feature is cut at up to `max_bins` quantile edges; bin b holds the values in
(edges[b-1], edges[b]], so "bin <= b goes left" is the split `x <= edges[b]`. Histograms hold
per-bin sums of gradients g and hessians h; the gain of a split is

    0.5 * (GL^2 / (HL + lambda) + GR^2 / (HR + lambda) - G^2 / (H + lambda)) - gamma

and a leaf's weight is -G / (H + lambda). These functions never see a Link: the SecureBoost roles
call them on plaintext (the guest's own features, decrypted host histograms, losses, margins) and,
on the host, on ciphertext residues (`node_histograms`, with its keyed feature shuffle).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import DataError
from sharelearn.operators import he_histogram as hh

__all__ = [
    "MAX_TIES",
    "MIN_SPLIT_GAIN",
    "SplitCandidate",
    "base_margin",
    "best_split",
    "bin_features",
    "feature_permutation",
    "gradients",
    "histogram",
    "id_rank",
    "leaf_weight",
    "loss",
    "node_histograms",
    "quantile_edges",
    "split_gains",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# XGBoost's kRtEps: a split must reduce the loss by more than this to count.
MIN_SPLIT_GAIN = 1e-6
# Exact ties kept per split (partitions that differ only in rows with zero g and h tie exactly).
MAX_TIES = 64
# XGBoost clamps hessians at this floor so that leaf weights stay finite.
_MIN_HESS = 1e-16


def quantile_edges(column: F64, max_bins: int) -> F64:
    """Upper bin edges of one feature: its distinct values if few, else `max_bins` quantiles.

    The last edge is the column's maximum, so every training value falls in a bin.
    """
    values = np.unique(column)
    if values.size <= max_bins:
        return values.astype(np.float64)
    # As in XGBoost's hist, a cut is a data value that starts a bin (x < cut goes left); the edge
    # kept here is the largest value below each cut, so "x <= edge" selects the same rows.
    qs = np.arange(1, max_bins, dtype=np.float64) / max_bins
    cuts = np.unique(np.quantile(column, qs, method="higher"))
    below = np.searchsorted(values, cuts, side="left") - 1
    return np.unique(np.append(values[below[below >= 0]], values[-1])).astype(np.float64)


def bin_features(x: F64, max_bins: int, *, name: str = "data") -> tuple[npt.NDArray[np.int32], list[F64]]:
    """Quantile-bin every column of `x` (n, F); return the bin indices (n, F) and each column's edges.

    Raises:
        DataError: a NaN or infinite value (names the column and the first row).
    """
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(f"{name}: feature column {col} has a non-finite value at row {row}; impute it first")
    bins = np.empty(x.shape, dtype=np.int32)
    edges: list[F64] = []
    for j in range(x.shape[1]):
        e = quantile_edges(x[:, j], max_bins)
        bins[:, j] = np.searchsorted(e, x[:, j], side="left")
        edges.append(e)
    return bins, edges


def histogram(bins: npt.NDArray[np.int32], g: F64, h: F64, rows: I64, n_bins: int) -> F64:
    """Sum g and h of `rows` per feature and bin: shape (F, n_bins, 2)."""
    n_features = bins.shape[1]
    keys = (bins[rows] + np.arange(n_features, dtype=np.int64) * n_bins).ravel()
    size = n_features * n_bins
    sum_g = np.bincount(keys, weights=np.repeat(g[rows], n_features), minlength=size)
    sum_h = np.bincount(keys, weights=np.repeat(h[rows], n_features), minlength=size)
    out: F64 = np.stack([sum_g, sum_h], axis=-1).astype(np.float64).reshape(n_features, n_bins, 2)
    return out


def split_gains(hist: F64, total_g: float, total_h: float, lam: float, min_child_weight: float) -> F64:
    """Gain (before gamma) of every split "bin <= b goes left", shape (F, n_bins); -inf where invalid."""
    left = np.cumsum(hist, axis=1)
    gl, hl = left[..., 0], left[..., 1]
    gr, hr = total_g - gl, total_h - hl
    parent = total_g * total_g / (total_h + lam)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent)
    valid = (hl >= min_child_weight) & (hr >= min_child_weight) & (hl > 0) & (hr > 0)
    return np.where(valid & np.isfinite(gain), gain, -np.inf)


@dataclass(frozen=True, slots=True)
class SplitCandidate:
    """The best split of one party's histogram: gain after gamma, feature position and bin.

    `ties` lists every (feature, bin) with exactly the same gain, in feature-then-bin order (at
    most `MAX_TIES`), so a party that shuffled its features can still break ties by its real order.
    """

    gain: float
    feature: int
    bin: int
    ties: tuple[tuple[int, int], ...] = ()


def best_split(
    hist: F64, total_g: float, total_h: float, *, lam: float, gamma: float, min_child_weight: float
) -> SplitCandidate | None:
    """The split with the highest gain (first in feature, then bin order on ties), or None."""
    if hist.size == 0:
        return None
    gains = split_gains(hist, total_g, total_h, lam, min_child_weight)
    flat = int(np.argmax(gains))
    best = float(gains.ravel()[flat]) - gamma
    if not np.isfinite(best) or best <= MIN_SPLIT_GAIN:
        return None
    feature, b = divmod(flat, hist.shape[1])
    tied = np.flatnonzero(gains.ravel() == gains.ravel()[flat])[:MAX_TIES]
    ties = tuple((int(t) // hist.shape[1], int(t) % hist.shape[1]) for t in tied)
    return SplitCandidate(best, feature, b, ties)


def leaf_weight(total_g: float, total_h: float, lam: float) -> float:
    """The optimal leaf weight -G / (H + lambda)."""
    return float(-total_g / (total_h + lam)) if total_h + lam > 0 else 0.0


def gradients(objective: str, y: F64, margin: F64) -> tuple[F64, F64]:
    """First and second derivatives of the loss at the raw margins.

    `binary`: logistic loss, margin (n,); `regression`: squared error, margin (n,);
    `multiclass`: softmax cross-entropy, margin (n, k), returning (n, k) arrays with XGBoost's
    hessian 2 p (1 - p).
    """
    if objective == "binary":
        p = 1.0 / (1.0 + np.exp(-margin))
        return p - y, np.maximum(p * (1.0 - p), _MIN_HESS)
    if objective == "regression":
        return margin - y, np.ones_like(margin)
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    p = shifted / shifted.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y.astype(np.int64)] = 1.0
    return p - onehot, np.maximum(2.0 * p * (1.0 - p), _MIN_HESS)


def base_margin(task: str, y: F64, k: int) -> list[float]:
    """The starting margin per class: log-odds of the mean (binary), the mean (regression), 0."""
    if task == "binary":
        p = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        return [float(np.log(p / (1 - p)))]
    if task == "regression":
        return [float(y.mean())]
    return [0.0] * k


def loss(task: str, y: F64, margin: F64) -> float:
    """Logistic loss (binary), RMSE (regression) or cross-entropy (multiclass) at margins (n, k)."""
    if task == "binary":
        m = margin[:, 0]
        return float(np.mean(np.logaddexp(0.0, m) - y * m))
    if task == "regression":
        return float(np.sqrt(np.mean((margin[:, 0] - y) ** 2)))
    logp = margin - margin.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y.astype(np.int64)]))


def id_rank(ids: np.ndarray) -> I64:
    """Each row's position in id order: sampling and checkpoints follow ids, not the PSI row order."""
    order = np.argsort(np.asarray([str(i) for i in ids], dtype=object), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def feature_permutation(key: bytes, tree: int, node: int, features: int) -> I64:
    """A secret per-node shuffle of a host's features (keyed, so a resumed run shuffles alike)."""
    digest = hmac.new(key, f"{tree}/{node}".encode(), hashlib.sha256).digest()
    rng = np.random.default_rng(np.frombuffer(digest, dtype=np.uint64))
    return rng.permutation(features).astype(np.int64)


def node_histograms(
    ct: Any,
    bins: npt.NDArray[np.int32],
    level: list[int],
    rows_of: dict[int, I64],
    parent_of: dict[int, int],
    cache: dict[int, Any],
    mod: Any,
    n_bins: int,
) -> dict[int, Any]:
    """Encrypted (F * B) bin sums per node of `level`: the smaller sibling built, the other subtracted.

    `cache` holds the previous level's sums (a parent's); it is replaced by this level's.
    """
    done: dict[int, Any] = {}
    for nd in level:
        if nd in done:
            continue
        parent = parent_of.get(nd)
        sibs = [s for s in level if s != nd and parent is not None and parent_of.get(s) == parent]
        if parent in cache and sibs:
            small, big = sorted([nd, sibs[0]], key=lambda v: (len(rows_of[v]), v))
            done[small] = hh.bin_products(ct, bins, rows_of[small], n_bins, mod)
            done[big] = hh.subtract(cache[parent], done[small], mod)
        else:
            done[nd] = hh.bin_products(ct, bins, rows_of[nd], n_bins, mod)
    cache.clear()
    cache.update(done)
    return done
