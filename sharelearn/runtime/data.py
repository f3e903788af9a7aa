"""Read a party's table (CSV or Parquet) into `PartyData`, checking its schema and every value.

Ids are always strings: the id column is read as text, so "007" stays "007", and integer ids in a
Parquet file become their decimal strings. Every other column (or the listed `features`) must be
numeric; the label and the optional sample-weight column (`weight:`) too. Columns the data block
declares `categorical` are read as text and kept as category codes 0..k-1 over the sorted category
list (recorded in `PartyData.categories`). With `missing: allow` empty feature cells become NaN
(infinities are still rejected); ids, labels and weights may never be missing.
Every error is a `DataError` that names the file, and the column and row
where one is at fault. Rows count from 1 over data rows; for a CSV file the file line (row + 1,
after the header) is given too.

The work is vectorised (pyarrow parsing, pandas hashing), so reading ten million ids takes seconds.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from sharelearn.core.errors import DataError
from sharelearn.core.types import F64Array
from sharelearn.runtime.jobspec import DataSpec

__all__ = ["PartyData", "read_ids", "read_party_data"]

log = logging.getLogger(__name__)

ObjArray = npt.NDArray[np.object_]
# Text that means "no value" in a numeric column: reported as missing, not as non-numeric.
_MISSING_TEXT = ("", "nan", "-nan", "na", "n/a", "null", "none", "#n/a")


@dataclass(frozen=True, slots=True, eq=False)
class PartyData:
    """A party's rows: string ids, float features and optional float labels and sample weights.

    Attributes:
        ids: object array of `str`, one per row, unique.
        x: float64 features, shape (n, d); d may be 0. NaN only where the data block allowed missing cells.
        y: float64 labels, shape (n,), or None.
        feature_names: the column name of each feature, in order.
        source: the file the rows were read from.
        weights: float64 sample weights (>= 0), shape (n,), or None.
        categories: categorical column -> its categories; the column holds codes into that tuple.
    """

    ids: ObjArray
    x: F64Array
    y: F64Array | None
    feature_names: tuple[str, ...]
    source: Path
    weights: F64Array | None = None
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, indices: npt.ArrayLike) -> PartyData:
        """Return the rows at `indices`, in that order."""
        rows = np.asarray(indices, dtype=np.intp)
        y = None if self.y is None else self.y[rows]
        w = None if self.weights is None else self.weights[rows]
        return PartyData(self.ids[rows], self.x[rows], y, self.feature_names, self.source, w, self.categories)


@dataclass(frozen=True, slots=True)
class _Where:
    """Names rows of one file in error messages."""

    path: Path
    csv: bool

    def row(self, index: int) -> str:
        return f"row {index + 1} (line {index + 2})" if self.csv else f"row {index + 1}"

    def error(self, message: str) -> DataError:
        return DataError(f"{self.path}: {message}")


def read_party_data(spec: DataSpec) -> PartyData:
    """Read and check a party's table.

    Raises:
        DataError: missing or empty file, missing column, empty or duplicate id, non-numeric
            or missing feature or label value; naming the file, column and row.
    """
    where = _Where(spec.path, spec.format != "parquet")
    header = _header(spec, where)
    features = _feature_names(spec, header, where)
    extra = [c for c in (spec.label, spec.weight) if c is not None]
    numeric = [*(f for f in features if f not in spec.categorical), *extra]
    table = _read(spec, where, [spec.id, *features, *extra], numeric, text=list(spec.categorical))
    ids_arrow = _id_column(table.column(spec.id), spec.id, where)
    keep = _deduplicate(ids_arrow, spec, where)
    allow = spec.missing == "allow"
    x = np.empty((table.num_rows, len(features)), dtype=np.float64)
    categories: dict[str, tuple[str, ...]] = {}
    for j, name in enumerate(features):
        if name in spec.categorical:
            x[:, j], categories[name] = _category_codes(table.column(name), name, where, allow)
        else:
            x[:, j] = _floats(table.column(name), f"column {name!r}", where, allow_missing=allow)
    y = (
        None
        if spec.label is None
        else _floats(table.column(spec.label), f"label column {spec.label!r}", where)
    )
    w = None if spec.weight is None else _weights(table.column(spec.weight), spec.weight, where)
    ids = ids_arrow.to_numpy(zero_copy_only=False)
    data = PartyData(ids, x, y, tuple(features), spec.path, w, categories)
    return data if keep is None else data.take(keep)


def read_ids(spec: DataSpec) -> ObjArray:
    """Read only the id column (the fast path for PSI), with the checks of `read_party_data`."""
    where = _Where(spec.path, spec.format != "parquet")
    _header(spec, where)
    table = _read(spec, where, [spec.id], [])
    ids_arrow = _id_column(table.column(spec.id), spec.id, where)
    keep = _deduplicate(ids_arrow, spec, where)
    ids: ObjArray = ids_arrow.to_numpy(zero_copy_only=False)
    return ids if keep is None else ids[keep]


def _header(spec: DataSpec, where: _Where) -> list[str]:
    """Return the column names, after checking that the file exists and has a header."""
    if not spec.path.is_file():
        raise where.error("data file not found" if not spec.path.exists() else "not a regular file")
    if spec.path.stat().st_size == 0:
        raise where.error("empty file: no header and no rows")
    try:
        if not where.csv:
            names: list[str] = pq.read_schema(spec.path).names
        else:
            with spec.path.open(newline="", encoding="utf-8-sig") as fh:
                names = next(csv.reader(fh), [])
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as exc:
        raise where.error(
            f"cannot read the {'CSV header' if where.csv else 'Parquet schema'}: {exc}"
        ) from exc
    if not names:
        raise where.error("empty file: no header")
    if spec.id not in names:
        raise where.error(f"id column {spec.id!r} not found; columns are {', '.join(map(repr, names))}")
    return names


def _feature_names(spec: DataSpec, header: list[str], where: _Where) -> list[str]:
    for what, name in (("label", spec.label), ("weight", spec.weight)):
        if name is not None and name not in header:
            raise where.error(f"{what} column {name!r} not found; columns are {', '.join(map(repr, header))}")
    if spec.features is None:
        features = [name for name in header if name not in (spec.id, spec.label, spec.weight)]
    else:
        features = list(spec.features)
        missing = [name for name in features if name not in header]
        if missing:
            raise where.error(
                f"feature column(s) {', '.join(map(repr, missing))} not found; "
                f"columns are {', '.join(map(repr, header))}"
            )
    absent = [name for name in spec.categorical if name not in header]
    if absent:
        raise where.error(
            f"categorical column(s) {', '.join(map(repr, absent))} not found; "
            f"columns are {', '.join(map(repr, header))}"
        )
    for name in [spec.id, *(c for c in (spec.label, spec.weight) if c), *features]:
        if header.count(name) > 1:
            raise where.error(f"column {name!r} appears {header.count(name)} times in the header")
    return features


def _read(
    spec: DataSpec, where: _Where, columns: list[str], numeric: list[str], text: list[str] | None = None
) -> pa.Table:
    """Read `columns` (ids and `text` as strings; for CSV, `numeric` as float64); check there are rows."""
    try:
        if where.csv:
            types = {
                spec.id: pa.string(),
                **dict.fromkeys(numeric, pa.float64()),
                **dict.fromkeys(text or (), pa.string()),
            }
            options = pa_csv.ConvertOptions(column_types=types, include_columns=columns)
            table = pa_csv.read_csv(spec.path, convert_options=options)
        else:
            table = pq.read_table(spec.path, columns=columns)
    except pa.ArrowInvalid as exc:
        if where.csv and "conversion error" in str(exc):
            raise _locate_non_numeric(spec.path, numeric, where, exc) from exc
        raise where.error(f"cannot read {'CSV' if where.csv else 'Parquet'}: {exc}") from exc
    except (pa.ArrowException, OSError) as exc:
        raise where.error(f"cannot read: {exc}") from exc
    if table.num_rows == 0:
        raise where.error("no data rows (the file has only a header)")
    return table


def _locate_non_numeric(path: Path, numeric: list[str], where: _Where, exc: Exception) -> DataError:
    """Re-read the numeric columns of a CSV as text to find the first value that is not a number."""
    # pyarrow's conversion error names neither the column nor the row; this slow path runs only
    # on a bad file.
    options = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(numeric, pa.string()), include_columns=numeric, strings_can_be_null=True
    )
    table = pa_csv.read_csv(path, convert_options=options)
    for name in numeric:
        _, bad = _parse_numbers(table.column(name))
        if bad.size:
            value = table.column(name)[int(bad[0])].as_py()
            return where.error(f"column {name!r}: non-numeric value {value!r} at {where.row(int(bad[0]))}")
    return where.error(f"cannot read CSV: {exc}")


def _parse_numbers(column: pa.ChunkedArray) -> tuple[F64Array, npt.NDArray[np.intp]]:
    """Parse a text column as float64; return the values and the rows that are not numbers."""
    text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    blank = text.str.strip().str.lower().isin(_MISSING_TEXT).to_numpy(dtype=bool)
    bad = np.flatnonzero(np.isnan(values) & text.notna().to_numpy() & ~blank)
    return values, bad


def _floats(column: pa.ChunkedArray, what: str, where: _Where, *, allow_missing: bool = False) -> F64Array:
    """Return a numeric column as float64; reject text and infinite values, and (unless
    `allow_missing`, when they become NaN) missing and NaN values."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values, bad = _parse_numbers(column)
        if bad.size:
            value = column[int(bad[0])].as_py()
            raise where.error(f"{what}: non-numeric value {value!r} at {where.row(int(bad[0]))}")
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_null(kind):
        values = np.full(len(column), np.nan)
    else:
        raise where.error(f"{what} has type {kind}, not a number")
    values = np.asarray(values, dtype=np.float64)
    if allow_missing:
        infinite = np.flatnonzero(np.isinf(values))
        if infinite.size:
            raise where.error(
                f"{what} has {infinite.size} infinite value(s), first at {where.row(int(infinite[0]))}"
            )
        return values
    missing = np.flatnonzero(~np.isfinite(values))
    if missing.size:
        hint = (
            " (set `missing: allow` in the data block to read empty cells as missing)"
            if what.startswith("column")
            else ""
        )
        raise where.error(
            f"{what} has {missing.size} empty, NaN or infinite value(s), "
            f"first at {where.row(int(missing[0]))}{hint}"
        )
    return values


def _weights(column: pa.ChunkedArray, name: str, where: _Where) -> F64Array:
    """Return the sample-weight column: finite and >= 0, not all zero."""
    values = _floats(column, f"weight column {name!r}", where)
    negative = np.flatnonzero(values < 0)
    if negative.size:
        raise where.error(
            f"weight column {name!r} has {negative.size} negative weight(s), first at "
            f"{where.row(int(negative[0]))}"
        )
    if not values.any():
        raise where.error(f"weight column {name!r}: every weight is 0")
    return values


def _category_codes(
    column: pa.ChunkedArray, name: str, where: _Where, allow_missing: bool
) -> tuple[F64Array, tuple[str, ...]]:
    """Return a categorical column as codes into its sorted categories (NaN where missing)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = pc.cast(column, kind.value_type), kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        column = pc.cast(column, pa.string())
    text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
    stripped = text.str.strip()
    blank = (text.isna() | stripped.str.lower().isin(_MISSING_TEXT)).to_numpy(dtype=bool)
    if blank.any() and not allow_missing:
        first = int(np.flatnonzero(blank)[0])
        raise where.error(
            f"categorical column {name!r} has {int(blank.sum())} empty value(s), first at "
            f"{where.row(first)} (set `missing: allow` in the data block to read them as missing)"
        )
    categories = tuple(sorted(set(stripped[~blank])))
    codes = pd.Categorical(stripped.where(~blank), categories=categories).codes.astype(np.float64)
    codes[blank] = np.nan
    return codes, categories


def _id_column(column: pa.ChunkedArray, name: str, where: _Where) -> pa.ChunkedArray:
    """Return the ids as strings; reject missing and empty (or blank) ids."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = pc.cast(column, kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_large_string(kind):
        column = pc.cast(column, pa.string())
    elif not pa.types.is_string(kind):
        raise where.error(f"id column {name!r} has type {kind}; ids must be strings or integers")
    empty = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0))
    empty_rows = np.flatnonzero(empty.to_numpy(zero_copy_only=False).astype(bool))
    if empty_rows.size:
        raise where.error(
            f"id column {name!r} has {empty_rows.size} empty id(s), first at {where.row(int(empty_rows[0]))}"
        )
    return column


def _deduplicate(ids: pa.ChunkedArray, spec: DataSpec, where: _Where) -> npt.NDArray[np.intp] | None:
    """Return the rows to keep under `spec.duplicate_ids`, or None when every id is unique."""
    codes, uniques = pd.factorize(pd.Series(ids, dtype=pd.ArrowDtype(pa.string())))
    n = len(codes)
    if len(uniques) == n:
        return None
    # factorize numbers ids in order of first appearance, so a row is an id's first occurrence
    # exactly when its code exceeds every earlier code.
    running_max = np.maximum.accumulate(codes)
    first = np.ones(n, dtype=bool)
    first[1:] = running_max[1:] > running_max[:-1]
    if spec.duplicate_ids == "error":
        later = int(np.argmin(first))
        earlier = int(np.argmax(codes == codes[later]))
        raise where.error(
            f"id column {spec.id!r}: duplicate id {ids[later].as_py()!r} at {where.row(earlier)} and "
            f"{where.row(later)} ({n - len(uniques)} repeated row(s) in all; "
            "set `duplicate_ids: first` or `duplicate_ids: drop` to accept them)"
        )
    keep = first if spec.duplicate_ids == "first" else np.bincount(codes)[codes] == 1
    log.warning(
        "%s: dropped %d of %d rows with repeated ids (duplicate_ids=%s)",
        spec.path,
        n - int(keep.sum()),
        n,
        spec.duplicate_ids,
    )
    return np.flatnonzero(keep)
