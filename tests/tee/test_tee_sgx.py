from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from sharelearn.core.errors import ConfigError, CryptoError, ProtocolError
from sharelearn.tee.attestation import unpack_evidence, verify_quote
from sharelearn.tee.backend import EnclaveIdentity, EnclaveImage
from sharelearn.tee.pccs import CollateralCache, PccsServer
from sharelearn.tee.quote import SgxReportBody, parse_quote
from sharelearn.tee.sgx import (
    LOADER_SCRIPT,
    SGX_DEVICE,
    GramineRuntime,
    GramineSgxBackend,
    render_manifest,
    sgx_available,
)
from sharelearn.tee.sim.platform import SimPlatform

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
    assert manifest["loader"]["env"]["SML_ENCLAVE_BUNDLE"] == "/app/"  # fixed, so measured
    scratch = manifest["fs"]["mounts"][0]
    assert scratch["type"] == "encrypted" and scratch["key_name"] == "_sgx_mrenclave"
    assert manifest["loader"]["env"]["SML_ENCLAVE_SCRATCH"] == scratch["path"]


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


VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "tee-vectors" / "dcap-qvl"
VECTOR_NOW = 1750334171  # inside the SGX vector's collateral window

APP = """
def handlers(rt):
    def noisy_echo(arg):
        print("a stray print must not reach the control channel")
        return arg

    return {
        "echo": noisy_echo,
        "evidence": lambda arg: rt.quote(bytes(arg)),
        "seal": lambda arg: rt.seal(arg),
        "unseal": lambda arg: rt.unseal(arg),
        "fail": lambda arg: int("not a number"),
        "crash": lambda arg: [][1],
    }
"""


def _loader_backend(tmp_path: Path, pccs_url: str | None) -> tuple[GramineSgxBackend, EnclaveImage]:
    """The Gramine launch path with the loader as a normal process and a stand-in /dev/attestation."""
    bundle, attestation = tmp_path / "bundle", tmp_path / "attestation"
    bundle.mkdir()
    (bundle / "enclave.json").write_text('{"entrypoint": "app:handlers"}')
    (bundle / "app.py").write_text(APP)
    (attestation / "keys").mkdir(parents=True)
    (attestation / "keys" / "_sgx_mrenclave").write_bytes(b"\x05" * 16)
    (attestation / "quote").write_bytes((VECTORS / "sgx_quote").read_bytes())  # a real SGX quote
    backend = GramineSgxBackend(
        tmp_path / "key.pem",
        tmp_path,
        pccs_url=pccs_url,
        command=[sys.executable, "-I", "-B", LOADER_SCRIPT],
        env={"SML_ENCLAVE_BUNDLE": str(bundle), "SML_ATTESTATION_DIR": str(attestation)},
    )
    body = parse_quote((VECTORS / "sgx_quote").read_bytes()).body
    assert isinstance(body, SgxReportBody)
    ident = EnclaveIdentity(body.mrenclave, body.mrsigner, body.isv_prod_id, body.isv_svn, body.debug)
    return backend, EnclaveImage("gramine-sgx", bundle, ident, "app", b"")


@pytest.mark.timeout(120)
def test_launch_serves_calls_and_fetches_collateral_for_its_quotes(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path / "pccs")
    cache.import_json((VECTORS / "sgx_quote_collateral.json").read_text(), source="sgx")
    with PccsServer(cache, clock=lambda: VECTOR_NOW) as pccs:
        backend, image = _loader_backend(tmp_path, pccs.url)
        with backend.launch(image) as enclave:
            echoed = enclave.call("echo", {"x": [1, 2]})
            evidence = enclave.call("evidence", list(range(64)))
            report_data = (tmp_path / "attestation" / "user_report_data").read_bytes()
            sealed = enclave.call("seal", b"model weights")
            unsealed = enclave.call("unseal", sealed)
            with pytest.raises(ProtocolError, match="ValueError"):
                enclave.call("fail")
            with pytest.raises(ProtocolError, match=r"internal error \(IndexError\)"):
                enclave.call("crash")  # a handler bug is reported without its text
            assert enclave.call("echo", 7) == 7  # still serving after a failed call
        assert isinstance(evidence, bytes)

    quote, collateral = unpack_evidence(evidence)

    assert echoed == {"x": [1, 2]}
    assert report_data == bytes(range(64))  # the enclave asked /dev/attestation for this quote
    assert quote == (VECTORS / "sgx_quote").read_bytes() and collateral is not None
    assert verify_quote(evidence, now=VECTOR_NOW).tee == "sgx"  # dcap-qvl, Intel's root
    assert unsealed == b"model weights" and sealed != b"model weights"


@pytest.mark.timeout(60)
def test_a_host_without_pccs_makes_quotes_fail_clearly(tmp_path: Path) -> None:
    backend, image = _loader_backend(tmp_path, None)

    with backend.launch(image) as enclave, pytest.raises(ProtocolError, match="no PCCS"):
        enclave.call("evidence", list(range(64)))


def test_launch_refuses_foreign_images_and_missing_gramine(tmp_path: Path) -> None:
    backend, image = _loader_backend(tmp_path, None)
    sim_image = EnclaveImage("sim", image.bundle, image.identity, "app", b"")

    with pytest.raises(ConfigError, match="cannot launch a sim image"):
        backend.launch(sim_image)
    if not sgx_available():
        with pytest.raises(ConfigError, match="gramine-sgx not found"):
            GramineSgxBackend(tmp_path / "key.pem", tmp_path).launch(image)
