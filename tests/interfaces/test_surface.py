"""The public surface a user meets first: the commands `sharelearn --help` lists, and test data lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sharelearn.interfaces import api
from sharelearn.interfaces.cli.app import app
from tests import datasets


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])

    assert result.exit_code == 0, result.output
    for command in ("run", "demo", "node", "certs", "tee", "bench"):
        assert command in result.output


def test_the_demo_job_ships_inside_the_package() -> None:
    path = api.demo_job_path()

    assert path.is_file() and "steps:" in path.read_text(encoding="utf-8")


def test_a_missing_data_set_skips_with_the_way_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "FATE_DIRS", (tmp_path / "nowhere",))

    with pytest.raises(pytest.skip.Exception, match="SHARELEARN_TEST_DATA.*cp ../shared/datasets/fate"):
        datasets.fate_file("breast_hetero_guest.csv")


def test_a_data_set_is_found_in_the_first_folder_that_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
    (second / "t.csv").write_text("id\n1\n")
    monkeypatch.setattr(datasets, "FATE_DIRS", (first, second))

    assert datasets.fate_file("t.csv") == second / "t.csv"
