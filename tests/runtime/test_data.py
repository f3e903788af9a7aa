from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharelearn.core.errors import DataError
from sharelearn.runtime.data import PartyData, read_ids, read_party_data
from sharelearn.runtime.jobspec import DataSpec

FATE = Path("/work/shared/datasets/fate")
needs_fate = pytest.mark.skipif(not FATE.is_dir(), reason="FATE breast datasets not available")
X_COLUMNS = tuple(f"x{i}" for i in range(10))


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def data_error(spec: DataSpec) -> str:
    with pytest.raises(DataError) as info:
        read_party_data(spec)
    return str(info.value)


def test_csv_round_trip_keeps_string_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "id,y,a,b\n007,1,0.5,2\n8,0,-1,3e2\n")

    data = read_party_data(DataSpec(path=path, label="y"))

    assert len(data) == 2
    assert data.ids.dtype == object and list(data.ids) == ["007", "8"]
    assert data.x.dtype == np.float64
    np.testing.assert_array_equal(data.x, [[0.5, 2.0], [-1.0, 300.0]])
    assert data.y is not None
    np.testing.assert_array_equal(data.y, [1.0, 0.0])
    assert data.feature_names == ("a", "b") and data.source == path


def test_features_select_and_order_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "name,id,a,b\nx,1,1,2\ny,2,3,4\n")

    data = read_party_data(DataSpec(path=path, features=("b", "a")))

    assert data.y is None and data.feature_names == ("b", "a")
    np.testing.assert_array_equal(data.x, [[2.0, 1.0], [4.0, 3.0]])


def test_label_only_party_has_zero_features(tmp_path: Path) -> None:
    data = read_party_data(DataSpec(path=write(tmp_path, "id,y\na,1\nb,0\n"), label="y"))

    assert data.x.shape == (2, 0)


def test_take_returns_rows_in_order(tmp_path: Path) -> None:
    data = read_party_data(DataSpec(path=write(tmp_path, "id,y,a\na,1,10\nb,0,20\nc,1,30\n"), label="y"))

    picked = data.take(np.array([2, 0]))

    assert isinstance(picked, PartyData)
    assert list(picked.ids) == ["c", "a"] and picked.x[:, 0].tolist() == [30.0, 10.0]
    assert picked.y is not None and picked.y.tolist() == [1.0, 1.0]


def test_parquet_integer_ids_become_decimal_strings(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table({"id": pa.array([7, 12], pa.int64()), "a": [1, 2], "y": [0.0, 1.0], "b": [True, False]})
    pq.write_table(table, path)

    data = read_party_data(DataSpec(path=path, label="y"))

    assert list(data.ids) == ["7", "12"] and all(isinstance(i, str) for i in data.ids)
    np.testing.assert_array_equal(data.x, [[1.0, 1.0], [2.0, 0.0]])
    assert list(read_ids(DataSpec(path=path))) == ["7", "12"]


def test_parquet_string_ids_and_pq_suffix(tmp_path: Path) -> None:
    path = tmp_path / "t.pq"
    pd.DataFrame({"uid": ["007", "x"], "a": [0.5, 1.5]}).to_parquet(path)

    data = read_party_data(DataSpec(path=path, id="uid"))

    assert list(data.ids) == ["007", "x"] and data.x[:, 0].tolist() == [0.5, 1.5]


def test_parquet_errors_name_column_and_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": ["a", "b", "c"], "a": ["1", "2", "zz"], "b": [1.0, np.nan, 2.0]}).to_parquet(path)

    message = data_error(DataSpec(path=path))
    assert message == f"{path}: column 'a': non-numeric value 'zz' at row 3"
    message = data_error(DataSpec(path=path, features=("b",)))
    assert "column 'b' has 1 empty, NaN or infinite value(s), first at row 2" in message


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = write(tmp_path, "id\n1\n", "t.parquet")

    assert "cannot read the Parquet schema" in data_error(DataSpec(path=path))


@needs_fate
def test_fate_guest_and_host_read() -> None:
    guest = read_party_data(DataSpec(path=FATE / "breast_hetero_guest.csv", label="y"))
    host_ids = read_ids(DataSpec(path=FATE / "breast_hetero_host.csv"))

    assert guest.x.shape == (569, 10) and guest.feature_names == X_COLUMNS
    assert guest.y is not None and set(np.unique(guest.y)) <= {0.0, 1.0}
    assert len(host_ids) == 569 and set(host_ids) == set(guest.ids)


@needs_fate
def test_fate_repeated_ids_rejected_by_default() -> None:
    spec = DataSpec(path=FATE / "breast_hetero_guest_repeated_id.csv", label="y", features=X_COLUMNS)

    message = data_error(spec)

    assert re.search(r"id column 'id': duplicate id '133' at row 1 \(line 2\) and row 2 \(line 3\)", message)
    with pytest.raises(DataError, match="duplicate id '133'"):
        read_ids(spec)


@needs_fate
@pytest.mark.parametrize("mode", ["first", "drop"])
def test_fate_repeated_ids_modes_match_pandas(mode: str) -> None:
    path = FATE / "breast_hetero_guest_repeated_id.csv"
    frame = pd.read_csv(path, dtype={"id": str})
    expected = frame.drop_duplicates("id", keep="first" if mode == "first" else False)

    data = read_party_data(DataSpec(path=path, label="y", features=X_COLUMNS, duplicate_ids=mode))  # type: ignore[arg-type]

    assert list(data.ids) == expected["id"].tolist()
    np.testing.assert_allclose(data.x, expected[list(X_COLUMNS)].to_numpy())
    assert list(read_ids(DataSpec(path=path, duplicate_ids=mode))) == list(data.ids)  # type: ignore[arg-type]


def test_duplicate_modes_on_small_file(tmp_path: Path) -> None:
    path = write(tmp_path, "id,a\nx,1\ny,2\nx,3\nz,4\n")

    first = read_party_data(DataSpec(path=path, duplicate_ids="first"))
    drop = read_party_data(DataSpec(path=path, duplicate_ids="drop"))

    assert list(first.ids) == ["x", "y", "z"] and first.x[:, 0].tolist() == [1.0, 2.0, 4.0]
    assert list(drop.ids) == ["y", "z"] and drop.x[:, 0].tolist() == [2.0, 4.0]
    assert "duplicate id 'x' at row 1 (line 2) and row 3 (line 4)" in data_error(DataSpec(path=path))


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("", {}, "empty file: no header and no rows"),
        ("\n", {}, "empty file: no header"),
        ("id,a\n", {}, "no data rows"),
        ("uid,a\n1,2\n", {}, "id column 'id' not found; columns are 'uid', 'a'"),
        ("id,a\n1,2\n", {"label": "y"}, "label column 'y' not found; columns are 'id', 'a'"),
        ("id,a\n1,2\n", {"features": ("a", "b")}, "feature column(s) 'b' not found"),
        ("id,a,a\n1,2,3\n", {}, "column 'a' appears 2 times in the header"),
        ("id,a\n1,2\n,3\n", {}, "id column 'id' has 1 empty id(s), first at row 2 (line 3)"),
        ("id,a\n1,2\n  ,3\n", {}, "id column 'id' has 1 empty id(s), first at row 2 (line 3)"),
        ("id,a\n1,2\n2,abc\n", {}, "column 'a': non-numeric value 'abc' at row 2 (line 3)"),
        (
            "id,a\n1,2\n2,\n3,NaN\n",
            {},
            "column 'a' has 2 empty, NaN or infinite value(s), first at row 2 (line 3)",
        ),
        (
            "id,a\n1,2\n2,inf\n",
            {},
            "column 'a' has 1 empty, NaN or infinite value(s), first at row 2 (line 3)",
        ),
        ("id,y\n1,yes\n", {"label": "y"}, "column 'y': non-numeric value 'yes' at row 1 (line 2)"),
        (
            "id,y\n1,1\n2,\n",
            {"label": "y"},
            "label column 'y' has 1 empty, NaN or infinite value(s), first at row 2",
        ),
        ("id,a\n1,2\n2\n", {}, "cannot read CSV"),
    ],
)
def test_csv_errors_name_file_column_and_row(
    tmp_path: Path, text: str, kwargs: dict[str, object], expected: str
) -> None:
    path = write(tmp_path, text)

    message = data_error(DataSpec(path=path, **kwargs))  # type: ignore[arg-type]

    assert message.startswith(f"{path}: ")
    assert expected in message, message


def test_ids_like_na_are_kept_as_text(tmp_path: Path) -> None:
    path = write(tmp_path, "id,a\nNA,1\nnull,2\n0001,3\n")

    assert list(read_ids(DataSpec(path=path))) == ["NA", "null", "0001"]
    assert list(read_party_data(DataSpec(path=path)).ids) == ["NA", "null", "0001"]


def test_late_non_numeric_value_is_located(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i}.5\n" for i in range(50_000))
    path = write(tmp_path, f"id,a\n{rows}50000,oops\n")

    assert "column 'a': non-numeric value 'oops' at row 50001 (line 50002)" in data_error(DataSpec(path=path))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"

    assert data_error(DataSpec(path=path)) == f"{path}: data file not found"
    with pytest.raises(DataError, match="data file not found"):
        read_ids(DataSpec(path=path))


def test_read_ids_skips_bad_feature_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "id,a\nq,not-a-number\nr,\n")

    assert list(read_ids(DataSpec(path=path))) == ["q", "r"]
