"""`sharelearn serve` / `serving status` argument errors, in-process with Typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sharelearn.core.errors import ConfigError, DataError
from sharelearn.interfaces.cli.app import app, exit_code
from sharelearn.runtime.serving.client import ServingError


def test_a_malformed_host_spec_is_a_usage_error(tmp_path: Path) -> None:
    args = ["serve", "guest", "--model", "m", "--party", "bank", "--certs", str(tmp_path), "--host", "shop0"]

    result = CliRunner().invoke(app, args)

    assert isinstance(result.exception, ConfigError) and "PARTY=HOST:PORT" in str(result.exception)
    assert exit_code(result.exception) == 2


def test_a_host_without_a_package_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("id,a\nu1,1.0\n")
    args = ["serve", "host", "--model", "m1", "--party", "shop0", "--certs", str(tmp_path),
            "--models", str(tmp_path), "--features", str(tmp_path / "f.csv")]  # fmt: skip

    result = CliRunner().invoke(app, args)

    assert isinstance(
        result.exception, DataError
    ) and f"no package of model m1 any version in {tmp_path}" in str(result.exception)
    assert exit_code(result.exception) == 3


def test_status_of_a_guest_that_is_not_running_is_a_peer_error() -> None:
    result = CliRunner().invoke(app, ["serving", "status", "--url", "http://127.0.0.1:9"])

    assert isinstance(result.exception, ServingError) and "127.0.0.1:9" in str(result.exception)
    assert exit_code(result.exception) == 4
