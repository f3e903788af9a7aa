from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from sharelearn.core.errors import ConfigError
from sharelearn.runtime.certs import (
    THROWAWAY_PREFIX,
    init_certs,
    load_credentials,
    reap_orphaned_certs,
    throwaway_certs,
)


def test_certs_name_each_party_and_chain_to_the_ca(tmp_path: Path) -> None:
    init_certs(["guest", "host", "arbiter"], tmp_path)

    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    for party in ("guest", "host", "arbiter"):
        cert = x509.load_pem_x509_certificate((tmp_path / f"{party}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert party in san.get_values_for_type(x509.DNSName)
        assert (tmp_path / f"{party}.key").stat().st_mode & 0o077 == 0
    assert "key" not in repr(load_credentials(tmp_path, "guest")).lower().replace("partycredentials", "")


@pytest.mark.parametrize("parties", [[], ["a", "a"], ["bad name"], ["../x"]])
def test_certs_reject_bad_party_lists(tmp_path: Path, parties: list[str]) -> None:
    with pytest.raises(ConfigError):
        init_certs(parties, tmp_path)


def test_missing_credentials_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certs init"):
        load_credentials(tmp_path, "guest")


def test_throwaway_certs_are_private_and_gone_after_an_error(tmp_path: Path) -> None:
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"), throwaway_certs(["guest", "host"], base=tmp_path) as d:
        seen.append(d)
        assert (d.stat().st_mode & 0o777) == 0o700 and (d / "ca.key").is_file()
        raise RuntimeError("boom")

    assert seen and not seen[0].exists()


def test_folders_of_dead_launchers_are_reaped_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = tmp_path / f"{THROWAWAY_PREFIX}{int(dead.stdout)}-abc"
    live = tmp_path / f"{THROWAWAY_PREFIX}{os.getpid()}-def"
    for d in (orphan, live):
        d.mkdir()
        (d / "ca.key").write_text("secret")

    assert reap_orphaned_certs(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists()
