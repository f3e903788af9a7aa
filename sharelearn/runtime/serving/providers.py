"""Feature providers: how a host (or the guest) looks its features up by id at serving time.

A provider answers `lookup(ids)` with the rows of those ids, columns in the order it was asked
for (matched by name against the model's schema), and a mask of the ids it does not know. Only
the provider ever holds features; nothing caches them outside it.

Providers: `TableProvider` (a CSV or Parquet file loaded in memory), `SqliteProvider` (one
query per lookup against a table), and a plug-in point: `load_provider("module:callable", ...)`
calls a user's factory that returns any object with the `FeatureProvider` shape.
"""

from __future__ import annotations

import importlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import ConfigError, DataError

__all__ = ["FeatureProvider", "SqliteProvider", "TableProvider", "load_provider"]

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@runtime_checkable
class FeatureProvider(Protocol):
    """Looks features up by id. `columns` are the names it can serve."""

    @property
    def columns(self) -> tuple[str, ...]: ...

    def lookup(self, ids: Sequence[str], names: Sequence[str]) -> tuple[F64, Mask]:
        """Rows (len(ids), len(names)) of the ids, and True where an id is unknown (its row is NaN)."""
        ...


def _check_names(source: str, have: Sequence[str], names: Sequence[str]) -> list[int]:
    missing = [n for n in names if n not in have]
    if missing:
        raise DataError(f"{source}: the model needs columns {missing}, the feature source has {list(have)}")
    return [list(have).index(n) for n in names]


class TableProvider:
    """A CSV or Parquet table held in memory, indexed by its id column."""

    def __init__(self, path: Path | str, *, id_column: str = "id") -> None:
        import pandas as pd

        self.source = str(path)
        p = Path(path)
        try:
            frame = (
                pd.read_parquet(p)
                if p.suffix in (".parquet", ".pq")
                else pd.read_csv(p, dtype={id_column: str})
            )
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: cannot read the feature table: {exc}") from exc
        if id_column not in frame.columns:
            raise DataError(f"{p}: no id column {id_column!r} (columns {list(frame.columns)})")
        ids = frame[id_column].astype(str).to_numpy()
        if len(set(ids.tolist())) != len(ids):
            raise DataError(f"{p}: column {id_column!r} has duplicate ids")
        features = frame.drop(columns=[id_column])
        try:
            self._x = features.to_numpy(dtype=np.float64)
        except ValueError as exc:
            raise DataError(f"{p}: feature columns must be numeric: {exc}") from exc
        self._columns = tuple(str(c) for c in features.columns)
        self._row = {str(i): k for k, i in enumerate(ids.tolist())}

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    def lookup(self, ids: Sequence[str], names: Sequence[str]) -> tuple[F64, Mask]:
        cols = _check_names(self.source, self._columns, names)
        rows = np.fromiter((self._row.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        unknown = rows < 0
        out = (
            self._x[np.where(unknown, 0, rows)][:, cols] if len(self._x) else np.zeros((len(ids), len(cols)))
        )
        out[unknown] = np.nan
        return out, unknown


class SqliteProvider:
    """Features in an SQLite table, looked up with one parameterised query per request."""

    def __init__(self, path: Path | str, *, table: str, id_column: str = "id") -> None:
        self.source = f"{path}:{table}"
        for name in (table, id_column):
            if not name.replace("_", "").isalnum():
                raise ConfigError(f"{self.source}: {name!r} is not a plain table or column name")
        self._conn = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        self._table, self._id = table, id_column
        try:
            info = self._conn.execute(f"PRAGMA table_info({table})").fetchall()
        except sqlite3.Error as exc:
            raise DataError(f"{self.source}: {exc}") from exc
        if not info:
            raise DataError(f"{self.source}: no such table")
        self._columns = tuple(str(r[1]) for r in info if r[1] != id_column)

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    def lookup(self, ids: Sequence[str], names: Sequence[str]) -> tuple[F64, Mask]:
        _check_names(self.source, self._columns, names)
        cols = ", ".join(f'"{n}"' for n in names)
        marks = ", ".join("?" for _ in ids)
        query = f'SELECT "{self._id}", {cols} FROM {self._table} WHERE "{self._id}" IN ({marks})'
        with self._lock:
            found = {str(r[0]): r[1:] for r in self._conn.execute(query, list(ids)).fetchall()}
        out = np.full((len(ids), len(names)), np.nan)
        unknown = np.ones(len(ids), dtype=bool)
        for k, i in enumerate(ids):
            row = found.get(i)
            if row is not None:
                out[k], unknown[k] = np.asarray(row, dtype=np.float64), False
        return out, unknown


def load_provider(spec: str, *, id_column: str = "id", table: str = "features") -> FeatureProvider:
    """A provider from a CLI spec: a .csv/.parquet path, `sqlite:PATH[#TABLE]`, or `py:module:factory`."""
    if spec.startswith("py:"):
        module, _, name = spec[3:].partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"feature provider {spec!r}: {exc}") from exc
        provider = factory()
        if not isinstance(provider, FeatureProvider):
            raise ConfigError(f"feature provider {spec!r} has no `columns` and `lookup(ids, names)`")
        return provider
    if spec.startswith("sqlite:"):
        path, _, tbl = spec[len("sqlite:") :].partition("#")
        return SqliteProvider(path, table=tbl or table, id_column=id_column)
    return TableProvider(spec, id_column=id_column)
