from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.quote import parse_quote
from sharelearn.tee.sgx import SGX_DEVICE, GramineRuntime, GramineSgxBackend, render_manifest, sgx_available
from sharelearn.tee.simplatform import SimPlatform

NO_SGX = (
    f"no SGX hardware here ({SGX_DEVICE} missing or Gramine tools not installed): real-enclave test NOT run"
)


def test_manifest_renders_valid_toml_with_identity_settings() -> None:
    text = render_manifest(
        python="/usr/bin/python3",
        entry_script="/app/main.py",
        bundle_dir="/app/",
        trusted_paths=["/usr/lib/python3.11/"],
        isv_prod_id=7,
        isv_svn=3,
    )

    manifest = tomllib.loads(text)

    assert manifest["sgx"]["debug"] is False and manifest["sgx"]["remote_attestation"] == "dcap"
    assert (manifest["sgx"]["isvprodid"], manifest["sgx"]["isvsvn"]) == (7, 3)
    assert "file:/app/" in manifest["sgx"]["trusted_files"]


def test_gramine_runtime_file_protocol(tmp_path: Path, platform: SimPlatform) -> None:
    # Emulates Gramine's /dev/attestation files with a directory; checks only our read/write protocol.
    ident = EnclaveIdentity(b"\x01" * 32, b"\x02" * 32, 7, 2)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "_sgx_mrenclave").write_bytes(b"\x03" * 16)
    (tmp_path / "quote").write_bytes(platform.quote(ident, bytes(64)))
    runtime = GramineRuntime(tmp_path)

    assert runtime.identity == ident
    assert runtime.unseal(runtime.seal(b"secret", b"aad"), b"aad") == b"secret"
    assert (tmp_path / "user_report_data").read_bytes() == bytes(64)
    with pytest.raises(CryptoError):
        runtime.get_seal_key("mrenclave", b"k" * 32, 3)


def test_backend_without_gramine_fails_with_clear_error(tmp_path: Path) -> None:
    if sgx_available():
        pytest.skip("Gramine is installed; the missing-tool path does not apply")
    with pytest.raises(ConfigError, match="Gramine"):
        GramineSgxBackend(tmp_path / "key.pem", tmp_path).load(tmp_path)


@pytest.mark.skipif(not sgx_available(), reason=NO_SGX)
def test_real_sgx_enclave_quote_verifies() -> None:
    rd = b"sharelearn".ljust(64, b"\0")
    quote = parse_quote(GramineRuntime().quote(rd))  # reached only on an SGX machine inside Gramine
    assert quote.body.report_data == rd and not quote.body.debug
