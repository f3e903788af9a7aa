"""The `scale` step: standard / min-max / robust scaling per party (vertical data: local statistics).

Each data party fits its own numeric columns on its own rows (NaN-aware: missing cells are
skipped and stay missing), rescales its rows and every split, and records (center, scale) in its
preprocessing, so the model package applies them at predict and serve time. Categorical
columns are left alone. A constant column gets scale 1 (as scikit-learn).

Messages: none. What each party learns: nothing new; no value leaves the party.
Horizontal data (a `server` role) needs federated statistics through secure aggregation, which
is not built yet: the step stops with a ConfigError saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sharelearn.algorithms.context import StepContext, StepDef
from sharelearn.algorithms.preprocess import check_columns, transform_dataset
from sharelearn.core.errors import ConfigError

__all__ = ["METHODS", "SCALE_STEP", "ScaleParams", "fit_scaler", "run_scale"]

METHODS = ("standard", "minmax", "robust")


@dataclass(frozen=True, slots=True)
class ScaleParams:
    """Parameters of `scale`.

    Attributes:
        method: standard (mean 0, sd 1), minmax (to [0, 1]) or robust (median 0, IQR 1).
        columns: the columns to scale (each party those it holds); empty: every numeric feature.
    """

    method: str = "standard"
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"scale.method must be one of {', '.join(METHODS)}, got {self.method!r}")


def fit_scaler(x: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) per column of `x`, skipping NaN; a zero or undefined scale becomes 1."""
    if method == "standard":
        center, spread = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    elif method == "minmax":
        center = np.nanmin(x, axis=0)
        spread = np.nanmax(x, axis=0) - center
    else:
        q1, center, q3 = np.nanquantile(x, [0.25, 0.5, 0.75], axis=0)
        spread = q3 - q1
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    return np.nan_to_num(center), spread


def run_scale(ctx: StepContext, params: ScaleParams) -> dict[str, Any]:
    """Fit and apply this party's scaler; return the scaled columns."""
    if "server" in ctx.roles.values():
        raise ConfigError("scale on horizontal data (a server role) is not supported yet")
    data = ctx.data
    names = [
        c
        for c in check_columns("scale", params.columns, data, ctx.party)
        if data and c not in data.categories
    ]
    if data is None or not names:
        return {}
    picked = [data.feature_names.index(c) for c in names]
    center, spread = fit_scaler(np.asarray(data.x, dtype=np.float64)[:, picked], params.method)
    entry = {"kind": "scale", "columns": names, "center": center.tolist(), "scale": spread.tolist()}
    transform_dataset(ctx, entry)
    return {"scaled": names, "method": params.method}


_SUMMARY = "standard / min-max / robust scaling per party"
SCALE_STEP = StepDef(name="scale", params=ScaleParams, run=run_scale, summary=_SUMMARY, handles_missing=True)
