"""The data block's `missing`, `categorical` and `weight` keys: reader and job-spec behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharelearn.core.errors import ConfigError, DataError
from sharelearn.runtime.data import read_party_data
from sharelearn.runtime.jobspec import DataSpec, parse_job

TABLE = "id,a,job,w,y\n1,0.5,clerk,1.0,0\n2,,baker,2.0,1\n3,1.5,,0.5,1\n4,2.5,clerk,1.0,0\n"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_cells_are_an_error_by_default_naming_column_and_row(tmp_path: Path) -> None:
    path = write(tmp_path, TABLE)

    with pytest.raises(DataError) as info:
        read_party_data(DataSpec(path, label="y", weight="w", categorical=("job",)))

    assert "column 'a'" in str(info.value) and "row 2 (line 3)" in str(info.value)
    assert "missing: allow" in str(info.value)


def test_missing_allow_reads_nan_and_codes_categories(tmp_path: Path) -> None:
    path = write(tmp_path, TABLE)

    data = read_party_data(DataSpec(path, label="y", weight="w", categorical=("job",), missing="allow"))

    assert data.feature_names == ("a", "job")
    np.testing.assert_array_equal(np.isnan(data.x), [[0, 0], [1, 0], [0, 1], [0, 0]])
    assert data.categories == {"job": ("baker", "clerk")}
    np.testing.assert_array_equal(data.x[[0, 1, 3], 1], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(data.weights, [1.0, 2.0, 0.5, 1.0])
    taken = data.take(np.array([3, 0]))
    np.testing.assert_array_equal(taken.weights, [1.0, 1.0])
    assert taken.categories == data.categories


def test_empty_categorical_cell_needs_missing_allow(tmp_path: Path) -> None:
    path = write(tmp_path, TABLE.replace(",,baker", ",9,baker"))

    with pytest.raises(DataError) as info:
        read_party_data(DataSpec(path, label="y", weight="w", categorical=("job",)))

    assert "categorical column 'job'" in str(info.value) and "row 3" in str(info.value)


def test_text_column_not_declared_categorical_is_non_numeric(tmp_path: Path) -> None:
    path = write(tmp_path, TABLE.replace(",,", ",1,").replace(",,", ",x,"))

    with pytest.raises(DataError, match="column 'job': non-numeric value 'clerk'"):
        read_party_data(DataSpec(path, label="y", weight="w", missing="allow"))


@pytest.mark.parametrize(
    ("weights", "message"),
    [("1,-1,1,1", "negative weight"), ("0,0,0,0", "every weight is 0"), ("1,,1,1", "empty")],
)
def test_bad_weights_are_data_errors(tmp_path: Path, weights: str, message: str) -> None:
    rows = [f"{i + 1},{i}.0,{w},0" for i, w in enumerate(weights.split(","))]
    path = write(tmp_path, "id,a,w,y\n" + "\n".join(rows) + "\n")

    with pytest.raises(DataError, match=f"weight column 'w'.*{message}"):
        read_party_data(DataSpec(path, label="y", weight="w", missing="allow"))


def test_infinity_is_rejected_even_with_missing_allow(tmp_path: Path) -> None:
    path = write(tmp_path, "id,a\n1,1\n2,inf\n")

    with pytest.raises(DataError, match="infinite"):
        read_party_data(DataSpec(path, missing="allow"))


def test_parquet_categorical_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table({"id": [1, 2, 3], "a": [1.0, None, 3.0], "city": ["x", "y", None]})
    pq.write_table(table, path)

    data = read_party_data(DataSpec(path, categorical=("city",), missing="allow"))

    assert data.categories == {"city": ("x", "y")}
    np.testing.assert_array_equal(np.isnan(data.x), [[0, 0], [1, 0], [0, 1]])


def test_data_block_keys_parse_and_are_checked(tmp_path: Path) -> None:
    job = (
        "parties:\n  g: {role: guest, data: {path: t.csv, label: y, missing: allow, "
        "categorical: [job], weight: w}}\nsteps:\n  - psi: {}\n"
    )

    spec = parse_job(job, base_dir=tmp_path).parties["g"].data

    assert spec is not None and spec.missing == "allow" and spec.categorical == ("job",)
    assert spec.weight == "w"
    with pytest.raises(ConfigError, match="missing must be error or allow"):
        parse_job(job.replace("missing: allow", "missing: maybe"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="weight 'y' is also"):
        parse_job(job.replace("weight: w", "weight: y"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="categorical: 'job' is not one of the listed features"):
        parse_job(job.replace("weight: w", "weight: w, features: [a]"), base_dir=tmp_path)
