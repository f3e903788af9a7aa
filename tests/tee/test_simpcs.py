"""Simulated quotes go through dcap-qvl with the simulation root and the simulated PCS collateral."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SGX_NOW
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sharelearn.core.errors import AttestationError
from sharelearn.tee.attestation import (
    EVIDENCE_MAGIC,
    _verify_sim,
    attest,
    pack_evidence,
    unpack_evidence,
    verify_quote,
)
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.pccs import CollateralCache, PccsServer, fetch_collateral
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule
from sharelearn.tee.quote import encode_sgx_quote_v3, parse_quote
from sharelearn.tee.sim.pcs import (
    SIM_CPUSVN,
    SIM_FMSPC,
    SIM_PCE_ID,
    SIM_PCESVN,
    SIM_PCK_CA_CN,
    SIM_ROOT_CN,
    SimPcs,
)
from sharelearn.tee.sim.platform import SimPlatform

dcap_qvl = pytest.importorskip(
    "dcap_qvl",
    reason="dcap-qvl not installed: simulated quotes cannot be verified (pip install 'sharelearn[tee]')",
)

IDENT = EnclaveIdentity(os.urandom(32), os.urandom(32), 7, 2, False)
RD = os.urandom(64)


def _policy(platform: SimPlatform) -> AttestationPolicy:
    return AttestationPolicy(
        accept=(EnclaveIdentityRule(mrenclave=IDENT.mrenclave),),
        name="sim",
        allow_simulation=True,
        simulation_root_der=platform.root_der,
    )


def _coll(text: str) -> object:
    return dcap_qvl.QuoteCollateralV3.from_json(text)


def test_simulated_quote_verifies_through_dcap_qvl_with_the_simulation_root(platform: SimPlatform) -> None:
    raw = platform.quote(IDENT, RD)
    now = int(time.time())

    report = dcap_qvl.verify_with_root_ca(raw, _coll(platform.collateral_json), platform.root_der, now)
    ev = attest(platform.evidence(IDENT, RD), _policy(platform), expected_report_data=RD)

    assert (report.status, list(report.advisory_ids)) == ("UpToDate", [])
    assert (ev.tee, ev.tcb_status, ev.mrenclave, ev.report_data) == (
        "sim-sgx",
        "UpToDate",
        IDENT.mrenclave,
        RD,
    )
    # dcap-qvl's own verdict on the same quote under Intel's root: refused.
    with pytest.raises(ValueError):
        dcap_qvl.verify(raw, _coll(platform.collateral_json), now)


def test_quote_carries_full_pck_chain_with_simulation_valued_sgx_extension(platform: SimPlatform) -> None:
    quote = parse_quote(platform.quote(IDENT, RD))
    chain = x509.load_pem_x509_certificates(quote.signature.cert_data)
    ext = dcap_qvl.parse_pck_extension_from_pem(quote.signature.cert_data)

    assert quote.signature.cert_type == 5 and len(chain) == 3
    assert [c.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in chain] == [
        SIM_PCK_CA_CN,
        SIM_ROOT_CN,
        SIM_ROOT_CN,
    ]
    assert (ext.fmspc, ext.pce_id, ext.cpu_svn, ext.pce_svn) == (
        SIM_FMSPC,
        SIM_PCE_ID,
        SIM_CPUSVN,
        SIM_PCESVN,
    )
    assert ext.ppid.startswith(b"SMLSIM-PPID-") and ext.sgx_type == 0
    assert quote.header.user_data.startswith(b"SML-SIM-NOT-SGX")  # the in-band label stays


def test_evidence_packing_roundtrip_and_bare_quotes_pass_through(platform: SimPlatform) -> None:
    raw = platform.quote(IDENT, RD)
    evidence = platform.evidence(IDENT, RD)

    assert evidence.startswith(EVIDENCE_MAGIC)
    assert unpack_evidence(pack_evidence(raw, "{}")) == (raw, "{}")
    assert unpack_evidence(raw) == (raw, None)
    with pytest.raises(AttestationError, match="quote length"):
        unpack_evidence(EVIDENCE_MAGIC + (10_000).to_bytes(4, "big") + raw[:10])
    with pytest.raises(AttestationError, match="without its collateral"):
        verify_quote(raw, now=int(time.time()), simulation_root_der=platform.root_der)


def test_tampered_pck_extension_is_refused(platform: SimPlatform) -> None:
    raw = platform.quote(IDENT, RD)
    quote = parse_quote(raw)
    chain = x509.load_pem_x509_certificates(quote.signature.cert_data)
    leaf = chain[0].public_bytes(serialization.Encoding.DER)
    fmspc_der = b"\x04\x06" + SIM_FMSPC  # the FMSPC OCTET STRING inside the SGX extension
    assert leaf.count(fmspc_der) == 1
    forged_leaf = x509.load_der_x509_certificate(leaf.replace(fmspc_der, b"\x04\x06SMLSIN"))
    cert_data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [forged_leaf, *chain[1:]])
    signature = replace(quote.signature, cert_data=cert_data)
    forged = encode_sgx_quote_v3(quote.header, raw[48:432], signature)

    with pytest.raises(AttestationError, match="DCAP verification under the simulation root failed"):
        verify_quote(
            pack_evidence(forged, platform.collateral_json),
            now=int(time.time()),
            simulation_root_der=platform.root_der,
        )


def test_wrong_simulation_root_is_refused_by_us_and_by_dcap_qvl(platform: SimPlatform) -> None:
    other = SimPlatform()
    raw = platform.quote(IDENT, RD)

    with pytest.raises(AttestationError, match="pinned simulation root"):
        attest(platform.evidence(IDENT, RD), _policy(other), expected_report_data=RD)
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(raw, _coll(platform.collateral_json), other.root_der, int(time.time()))
    # Another platform's collateral (signed under another root) does not verify this platform's quote.
    with pytest.raises(AttestationError, match="DCAP verification"):
        verify_quote(
            pack_evidence(raw, other.collateral_json),
            now=int(time.time()),
            simulation_root_der=platform.root_der,
        )


def test_expired_collateral_is_refused(platform: SimPlatform) -> None:
    later = int(platform.pcs.next_update.timestamp()) + 60

    with pytest.raises(AttestationError, match="simulation root failed.*CrlExpired"):
        verify_quote(platform.evidence(IDENT, RD), now=later, simulation_root_der=platform.root_der)


def test_revoked_pck_certificate_is_refused() -> None:
    platform = SimPlatform()
    before = platform.evidence(IDENT, RD)
    assert verify_quote(before, now=int(time.time()), simulation_root_der=platform.root_der).tee == "sim-sgx"

    platform.pcs.revoke_pck()
    crl = x509.load_der_x509_crl(bytes.fromhex(json.loads(platform.collateral_json)["pck_crl"]))
    assert crl.get_revoked_certificate_by_serial_number(platform.pcs.pck.serial_number) is not None

    with pytest.raises(AttestationError, match="(?s)simulation root failed.*CertRevoked"):
        verify_quote(
            platform.evidence(IDENT, RD), now=int(time.time()), simulation_root_der=platform.root_der
        )


def test_forged_tcb_info_is_refused(platform: SimPlatform) -> None:
    doc = json.loads(platform.collateral_json)
    bad_sig = dict(doc, tcb_info_signature=("00" if doc["tcb_info_signature"][:2] != "00" else "11"))
    bad_sig["tcb_info_signature"] += doc["tcb_info_signature"][2:]
    edited = dict(
        doc, tcb_info=doc["tcb_info"].replace('"tcbEvaluationDataNumber":1', '"tcbEvaluationDataNumber":2')
    )

    for collateral in (bad_sig, edited):
        with pytest.raises(AttestationError, match="(?i)signature is invalid for tcb_info"):
            verify_quote(
                pack_evidence(platform.quote(IDENT, RD), json.dumps(collateral)),
                now=int(time.time()),
                simulation_root_der=platform.root_der,
            )


def test_qe_identity_mismatch_is_refused(platform: SimPlatform) -> None:
    pcs = platform.pcs
    wrong_signer = pcs.signed_collateral(qe_identity=pcs.qe_identity_doc() | {"mrsigner": "AB" * 32})
    wrong_prod = pcs.signed_collateral(qe_identity=pcs.qe_identity_doc() | {"isvprodid": 2})

    for collateral, what in ((wrong_signer, "MRSIGNER"), (wrong_prod, "ISVPRODID")):
        with pytest.raises(AttestationError, match=f"simulation root failed.*QE {what} mismatch"):
            verify_quote(
                pack_evidence(platform.quote(IDENT, RD), collateral),
                now=int(time.time()),
                simulation_root_der=platform.root_der,
            )


def test_tcb_level_from_signed_tcb_info_reaches_the_policy(platform: SimPlatform) -> None:
    pcs = platform.pcs
    tcb = pcs.tcb_info_doc()
    tcb["tcbLevels"][0] |= {"tcbStatus": "OutOfDate", "advisoryIDs": ["SML-SIM-SA-0001"]}
    evidence = pack_evidence(platform.quote(IDENT, RD), pcs.signed_collateral(tcb_info=tcb))

    ev = verify_quote(evidence, now=int(time.time()), simulation_root_der=platform.root_der)
    assert (ev.tcb_status, ev.advisories) == ("OutOfDate", ("SML-SIM-SA-0001",))
    with pytest.raises(AttestationError, match="OutOfDate"):
        attest(evidence, _policy(platform), expected_report_data=RD)


def test_real_vector_is_refused_against_the_simulation_root(platform: SimPlatform, vectors: Path) -> None:
    raw = (vectors / "dcap-qvl/sgx_quote").read_bytes()
    coll = (vectors / "dcap-qvl/sgx_quote_collateral.json").read_text()

    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(raw, _coll(coll), platform.root_der, SGX_NOW)
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(raw, _coll(platform.collateral_json), platform.root_der, SGX_NOW)
    with pytest.raises(AttestationError, match="not a SIMULATION-labelled quote"):
        _verify_sim(parse_quote(raw), coll, platform.root_der, SGX_NOW)
    # Through the public path it is judged as what it is: real, under Intel's root, never "sim-sgx".
    ev = verify_quote(raw, now=SGX_NOW, collateral=coll, simulation_root_der=platform.root_der)
    assert ev.tee == "sgx" and not ev.simulated


def test_simulated_quote_is_refused_by_a_production_policy_even_with_valid_collateral(
    platform: SimPlatform,
) -> None:
    production = AttestationPolicy(accept=(EnclaveIdentityRule(mrenclave=IDENT.mrenclave),), name="prod")

    with pytest.raises(AttestationError, match="simulated evidence.*allow_simulation=False"):
        attest(platform.evidence(IDENT, RD), production, expected_report_data=RD)


def test_collateral_is_built_once_per_platform() -> None:
    pcs = SimPcs()
    first = pcs.collateral_json

    assert pcs.collateral_json is first
    assert json.loads(first)["tcb_info"] == json.dumps(pcs.tcb_info_doc(), separators=(",", ":"))


def test_bench_attestation_figures_run(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_tee

    assert bench_tee.main(["--attestation-only", "--quotes", "5", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)["attestation"]
    assert figures["quotes"] == 5 and figures["sim_dcap_qvl_verify_ms"] > 0
    assert figures["ratio_dcap_vs_own"] > 0


def test_verifier_can_fetch_sim_collateral_from_pccs_lite(platform: SimPlatform, tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path / "sim-pccs")
    assert cache.import_json(platform.collateral_json, source="sim") == ("sgx", SIM_FMSPC.hex().upper())
    raw = platform.quote(IDENT, RD)

    with PccsServer(cache) as pccs:
        fetched = fetch_collateral(pccs.url, raw)
    ev = verify_quote(raw, now=int(time.time()), collateral=fetched, simulation_root_der=platform.root_der)

    assert (ev.tee, ev.tcb_status) == ("sim-sgx", "UpToDate")
    with pytest.raises(ValueError):  # the proxy's copy is no more trusted than the original
        dcap_qvl.verify(raw, _coll(fetched), int(time.time()))
