"""Plain numpy kernels of gradient-boosted trees (XGBoost's second-order formulas, Chen & Guestrin 2016).

Binning: each feature is cut at up to `max_bins` quantile edges; bin b holds the values in
(edges[b-1], edges[b]], so "bin <= b goes left" is the split `x <= edges[b]`. Histograms hold
per-bin sums of gradients g and hessians h; the gain of a split is

    0.5 * (GL^2 / (HL + lambda) + GR^2 / (HR + lambda) - G^2 / (H + lambda)) - gamma

and a leaf's weight is -G / (H + lambda). These functions never see a Link or a ciphertext: the
SecureBoost roles call them on plaintext (the guest's own features, decrypted host histograms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import DataError

__all__ = [
    "MAX_TIES",
    "MIN_SPLIT_GAIN",
    "SplitCandidate",
    "best_split",
    "bin_features",
    "gradients",
    "histogram",
    "leaf_weight",
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
