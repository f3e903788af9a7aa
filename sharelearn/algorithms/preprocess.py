"""Fitted preprocessing: apply a model package's steps to new rows, and the missing-value guard.

A model package's `preprocessing` is the list of fitted steps (plain dicts, in order) that turned
the party's raw columns into the columns the model was trained on. `impute`, `scale` and `encode`
append to `StepContext.preprocessing` as they fit; `publish_model` puts the list (after a
`categories` entry naming the training categories of columns still held as codes) in the package.
`apply_preprocessing(package_or_steps, frame)` replays it on a table at predict time, and serving
calls the same function on a pandas DataFrame of raw feature values (categorical columns as text).

Entries (every one names its columns, so the frame is matched by name, never by position):
- `{"kind": "categories", "columns": {col: [cat, ...]}}`: recode category codes (or text) to the
  training categories; an unseen category is a DataError naming column and value.
- `{"kind": "impute", "columns": [...], "values": [...]}`: NaN -> the fitted value.
- `{"kind": "scale", "columns": [...], "center": [...], "scale": [...]}`: (x - center) / scale.
- `{"kind": "encode", "method": "onehot", "column": c, "categories": [...]}`: the code column is
  replaced by one 0/1 column per category, named `c=category` (a missing cell: all zeros).

Nothing here talks to another party.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sharelearn.algorithms.context import Dataset, StepContext
from sharelearn.core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sharelearn.algorithms.package import ModelPackage

__all__ = [
    "Table",
    "apply_preprocessing",
    "categories_entry",
    "check_columns",
    "missing_report",
    "onehot_names",
    "require_complete",
    "transform_dataset",
    "transform_steps",
]

Steps = Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True, eq=False)
class Table:
    """A transformed party table (the `Dataset` protocol), as preprocessing returns it."""

    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray | None
    feature_names: tuple[str, ...]
    source: Path
    weights: np.ndarray | None = None
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, indices: np.ndarray) -> Table:
        rows = np.asarray(indices, dtype=np.intp)
        arrays: dict[str, Any] = {k: getattr(self, k) for k in ("ids", "x", "y", "weights")}
        cut: dict[str, Any] = {k: None if v is None else v[rows] for k, v in arrays.items()}
        return replace(self, **cut)

    @classmethod
    def of(cls, data: Dataset) -> Table:
        return cls(
            np.asarray(data.ids),
            np.array(data.x, dtype=np.float64),
            data.y,
            tuple(data.feature_names),
            data.source,
            data.weights,
            dict(data.categories),
        )


def onehot_names(column: str, categories: Sequence[str]) -> list[str]:
    """The columns one-hot encoding makes of `column`: `column=category`, in category order."""
    return [f"{column}={c}" for c in categories]


def categories_entry(data: Dataset) -> dict[str, Any] | None:
    """The `categories` entry for a table's categorical columns (None without any)."""
    if not data.categories:
        return None
    return {"kind": "categories", "columns": {k: list(v) for k, v in data.categories.items()}}


def _index(table: Table, name: str, kind: str) -> int:
    if name not in table.feature_names:
        raise DataError(
            f"{table.source}: preprocessing step {kind!r} needs column {name!r}; "
            f"columns are {list(table.feature_names)}"
        )
    return table.feature_names.index(name)


def _recode(table: Table, entry: Mapping[str, Any]) -> Table:
    x, cats = table.x, dict(table.categories)
    for name, wanted in dict(entry["columns"]).items():
        j = _index(table, name, "categories")
        have = cats.get(name)
        if have is None or list(have) == list(wanted):
            cats[name] = tuple(wanted)
            continue
        lookup = {c: float(i) for i, c in enumerate(wanted)}
        unseen = [c for c in have if c not in lookup]
        codes = x[:, j]
        present = ~np.isnan(codes)
        used = {have[int(c)] for c in np.unique(codes[present])}
        if bad := [c for c in unseen if c in used]:
            raise DataError(
                f"{table.source}: column {name!r} has category {bad[0]!r}, unseen in training "
                f"(the model knows {list(wanted)})"
            )
        mapping = np.asarray([lookup.get(c, np.nan) for c in have], dtype=np.float64)
        x[present, j] = mapping[codes[present].astype(np.intp)]
        cats[name] = tuple(wanted)
    return replace(table, x=x, categories=cats)


def _impute(table: Table, entry: Mapping[str, Any]) -> Table:
    for name, value in zip(entry["columns"], entry["values"], strict=True):
        j = _index(table, name, "impute")
        col = table.x[:, j]
        col[np.isnan(col)] = float(value)
    return table


def _scale(table: Table, entry: Mapping[str, Any]) -> Table:
    for name, center, scale in zip(entry["columns"], entry["center"], entry["scale"], strict=True):
        j = _index(table, name, "scale")
        table.x[:, j] = (table.x[:, j] - float(center)) / float(scale)
    return table


def _onehot(table: Table, entry: Mapping[str, Any]) -> Table:
    name, wanted = str(entry["column"]), list(entry["categories"])
    table = _recode(table, {"columns": {name: wanted}})
    j = _index(table, name, "encode")
    codes = table.x[:, j]
    block = np.zeros((len(codes), len(wanted)), dtype=np.float64)
    present = ~np.isnan(codes)
    block[np.flatnonzero(present), codes[present].astype(np.intp)] = 1.0
    x = np.hstack([table.x[:, :j], block, table.x[:, j + 1 :]])
    names = (*table.feature_names[:j], *onehot_names(name, wanted), *table.feature_names[j + 1 :])
    cats = {k: v for k, v in table.categories.items() if k != name}
    return replace(table, x=x, feature_names=names, categories=cats)


def _encode(table: Table, entry: Mapping[str, Any]) -> Table:
    if entry.get("method") == "onehot":
        return _onehot(table, entry)
    return _recode(table, {"columns": {str(entry["column"]): list(entry["categories"])}})


_APPLY = {"categories": _recode, "impute": _impute, "scale": _scale, "encode": _encode}


def transform_steps(steps: Steps, data: Dataset) -> Table:
    """Replay fitted preprocessing `steps` on `data` (a new table; `data` is not changed)."""
    table = Table.of(data)
    for entry in steps:
        kind = str(entry.get("kind"))
        if kind not in _APPLY:
            raise DataError(f"{data.source}: unknown preprocessing step {kind!r} in the model package")
        table = _APPLY[kind](table, entry)
    return table


def transform_dataset(ctx: StepContext, entry: dict[str, Any]) -> None:
    """Apply one freshly fitted step to this party's rows and splits; record it for the package."""
    if ctx.data is not None:
        ctx.data = transform_steps([entry], ctx.data)
    ctx.splits = {part: transform_steps([entry], rows) for part, rows in ctx.splits.items()}
    ctx.preprocessing.append(entry)


def _frame_table(frame: pd.DataFrame, steps: Steps) -> Table:
    """A DataFrame of raw values as a table: text in categorical columns becomes codes."""
    known: dict[str, list[str]] = {}
    for entry in steps:
        if entry.get("kind") == "categories":
            known.update({k: list(v) for k, v in dict(entry["columns"]).items()})
        elif entry.get("kind") == "encode":
            known.setdefault(str(entry["column"]), list(entry["categories"]))
    x = np.empty(frame.shape, dtype=np.float64)
    cats: dict[str, tuple[str, ...]] = {}
    for j, name in enumerate(frame.columns):
        col = frame[name]
        if name in known and not pd.api.types.is_numeric_dtype(col):
            text = col.astype("string").str.strip()
            cats[name] = tuple(sorted(set(text.dropna())))
            x[:, j] = pd.Categorical(text, categories=cats[name]).codes
            x[text.isna().to_numpy(), j] = np.nan
        else:
            x[:, j] = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    ids = np.asarray([str(i) for i in frame.index], dtype=object)
    return Table(ids, x, None, tuple(map(str, frame.columns)), Path("<frame>"), None, cats)


def apply_preprocessing(package_part: ModelPackage | Steps, frame: Any) -> Any:
    """Apply a package's fitted preprocessing to `frame` (a `Dataset` or a pandas DataFrame).

    A DataFrame (columns = raw feature names, categorical columns as text or training codes)
    comes back as a DataFrame of the model's columns; a `Dataset` as a `Table`.
    """
    steps: Steps = package_part if isinstance(package_part, Sequence) else package_part.preprocessing
    if isinstance(frame, pd.DataFrame):
        out = transform_steps(steps, _frame_table(frame, steps))
        return pd.DataFrame(out.x, index=frame.index, columns=list(out.feature_names))
    return transform_steps(steps, frame)


def missing_report(data: Dataset) -> dict[str, int]:
    """Column -> number of missing (NaN) cells, for the columns that have any."""
    x = np.asarray(data.x, dtype=np.float64)
    if x.size == 0:
        return {}
    counts = np.isnan(x).sum(axis=0)
    return {name: int(c) for name, c in zip(data.feature_names, counts, strict=True) if c}


def require_complete(ctx: StepContext, step: str) -> None:
    """Stop a step that cannot handle missing values when this party's rows have some.

    Raises:
        DataError: naming the step, the party, the file and the first columns with missing cells.
    """
    tables = [("rows", ctx.data), *ctx.splits.items()]
    for _, table in tables:
        if table is None:
            continue
        report = missing_report(table)
        if report:
            shown = ", ".join(f"{k!r} ({v} missing)" for k, v in list(report.items())[:5])
            raise DataError(
                f"step {step!r} cannot handle missing values: party {ctx.party!r}, {table.source}: "
                f"column(s) {shown}; add an `impute` step before it (or drop the rows)"
            )


def check_columns(step: str, columns: Sequence[str], data: Dataset | None, party: str) -> list[str]:
    """The listed columns this party holds (every feature when `columns` is empty)."""
    if data is None:
        return []
    if not columns:
        return list(data.feature_names)
    if len(set(columns)) != len(columns):
        raise ConfigError(f"{step}.columns lists a column twice: {list(columns)}")
    return [c for c in data.feature_names if c in columns]
