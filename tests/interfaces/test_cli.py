from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sharelearn.core.errors import ConfigError, DataError, PartyFailed
from sharelearn.interfaces.cli.app import EXIT_CODES, app, exit_code
from sharelearn.runtime.control import exit_code_for


def test_certs_init_writes_a_ca_and_one_certificate_per_party(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["certs", "init", "--parties", "guest,host,arbiter", "--out", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {
        "ca.pem",
        "ca.key",
        "guest.pem",
        "guest.key",
        "host.pem",
        "host.key",
        "arbiter.pem",
        "arbiter.key",
    }


def test_unknown_benchmark_is_a_config_error() -> None:
    result = CliRunner().invoke(app, ["bench", "nonexistent"])

    assert isinstance(result.exception, ConfigError)


def test_exit_codes_are_distinct_per_error_family() -> None:
    assert exit_code(PartyFailed("shop", "died")) == 1
    assert exit_code(ConfigError("x")) == 2
    assert exit_code(DataError("x")) == 3
    assert exit_code(RuntimeError("bug")) == 70
    assert len({code for _, code in EXIT_CODES}) == len(EXIT_CODES)


def test_a_party_exits_with_the_same_code_the_cli_gives_its_error() -> None:
    for kind, code in EXIT_CODES:
        assert exit_code_for(kind("party", "x") if kind is PartyFailed else kind("x")) == code
    assert exit_code_for(RuntimeError("bug")) == exit_code(RuntimeError("bug")) == 70
