"""The `impute` step: fill missing feature values per party (vertical data: local statistics).

Each data party fits its own columns on its own rows (mean, median, a constant or the most
frequent value; a categorical column always takes its most frequent category), fills its rows
and every split, and records the fitted values in its preprocessing, so the model package
applies them at predict and serve time (`algorithms.preprocess`).

Messages: none. What each party learns: nothing new; no value leaves the party.
Horizontal data (a `server` role) needs the statistics through secure aggregation, which is not
built yet: the step stops with a ConfigError saying so rather than fitting each client alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sharelearn.algorithms.context import StepContext, StepDef
from sharelearn.algorithms.preprocess import check_columns, transform_dataset
from sharelearn.core.errors import ConfigError, DataError

__all__ = ["IMPUTE_STEP", "STRATEGIES", "ImputeParams", "run_impute"]

STRATEGIES = ("mean", "median", "constant", "most_frequent")


@dataclass(frozen=True, slots=True)
class ImputeParams:
    """Parameters of `impute`.

    Attributes:
        strategy: mean | median | constant | most_frequent (ties: the smallest value, as scikit-learn).
        fill_value: the value of `constant`.
        columns: the columns to fill (each party fills those it holds); empty: every feature.
    """

    strategy: str = "mean"
    fill_value: float = 0.0
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"impute.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )


def _most_frequent(column: np.ndarray) -> float:
    values, counts = np.unique(column, return_counts=True)
    return float(values[int(np.argmax(counts))])


def _fill_value(column: np.ndarray, strategy: str, fill_value: float) -> float:
    if strategy == "constant":
        return fill_value
    if strategy == "mean":
        return float(np.mean(column))
    if strategy == "median":
        return float(np.median(column))
    return _most_frequent(column)


def run_impute(ctx: StepContext, params: ImputeParams) -> dict[str, Any]:
    """Fit and apply this party's imputer; return the filled columns and their missing counts."""
    if "server" in ctx.roles.values():
        raise ConfigError("impute on horizontal data (a server role) is not supported yet")
    data = ctx.data
    columns = check_columns("impute", params.columns, data, ctx.party)
    if data is None or not columns:
        return {}
    x = np.asarray(data.x, dtype=np.float64)
    values, missing = [], {}
    for name in columns:
        col = x[:, data.feature_names.index(name)]
        present = col[~np.isnan(col)]
        if present.size == 0 and params.strategy != "constant":
            raise DataError(
                f"impute: party {ctx.party!r}, {data.source}: column {name!r} has no value at all"
            )
        strategy = "most_frequent" if name in data.categories else params.strategy
        values.append(_fill_value(present, strategy, params.fill_value))
        missing[name] = int(col.size - present.size)
    transform_dataset(ctx, {"kind": "impute", "columns": columns, "values": values})
    return {"imputed": missing, "strategy": params.strategy}


IMPUTE_STEP = StepDef(
    "impute",
    ImputeParams,
    run_impute,
    "fill missing feature values per party (mean, median, constant, most frequent)",
    handles_missing=True,
)
