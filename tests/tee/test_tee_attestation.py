from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SGX_NOW, TDX_NOW

from sharelearn.core.errors import AttestationError, ConfigError
from sharelearn.tee.attestation import attest, verify_quote
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule, appraise, bind_report_data
from sharelearn.tee.quote import SgxReportBody, TdReportBody, parse_quote
from sharelearn.tee.sim.platform import SimPlatform

pytest.importorskip(
    "dcap_qvl",
    reason="dcap-qvl not installed: real-quote verification cannot run (pip install 'sharelearn[tee]')",
)

SGX_MRENCLAVE = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
SGX_RD = b"Hello, world!".ljust(64, b"\0")
PROD = AttestationPolicy(accept=(EnclaveIdentityRule(mrenclave=SGX_MRENCLAVE),), name="prod")
LENIENT = replace(
    PROD,
    name="prod-hardening-ok",
    accepted_tcb_statuses=frozenset({"UpToDate", "ConfigurationAndSWHardeningNeeded"}),
    accepted_advisories=frozenset({"INTEL-SA-00289", "INTEL-SA-00615"}),
)


def _sgx(vectors: Path) -> tuple[bytes, str]:
    return (vectors / "dcap-qvl/sgx_quote").read_bytes(), (
        vectors / "dcap-qvl/sgx_quote_collateral.json"
    ).read_text()


def test_real_sgx_quote_verifies_with_documented_tcb_status(vectors: Path) -> None:
    raw, coll = _sgx(vectors)

    ev = verify_quote(raw, now=SGX_NOW, collateral=coll)

    assert ev.tee == "sgx" and not ev.simulated
    assert ev.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert ev.advisories == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert ev.mrenclave == SGX_MRENCLAVE and ev.report_data == SGX_RD


def test_real_tdx_quote_verifies_up_to_date_and_matches_mrtd_rule(vectors: Path) -> None:
    raw = (vectors / "dcap-qvl/tdx_quote").read_bytes()
    body = parse_quote(raw).body
    assert isinstance(body, TdReportBody)
    policy = AttestationPolicy(accept=(EnclaveIdentityRule(mrtd=body.mrtd),), name="tdx")

    ev = attest(
        raw,
        policy,
        expected_report_data=body.report_data,
        now=TDX_NOW,
        collateral=(vectors / "dcap-qvl/tdx_quote_collateral.json").read_text(),
    )

    assert (ev.tee, ev.tcb_status) == ("tdx", "UpToDate")


def test_production_policy_refuses_outdated_tcb_and_names_clause(vectors: Path) -> None:
    raw, coll = _sgx(vectors)

    with pytest.raises(
        AttestationError, match=r"MRENCLAVE=33d8736db756ed49.*'prod'.*ConfigurationAndSWHardeningNeeded"
    ):
        attest(raw, PROD, expected_report_data=SGX_RD, now=SGX_NOW, collateral=coll)


def test_status_allowed_only_with_listed_advisories(vectors: Path) -> None:
    raw, coll = _sgx(vectors)

    ev = attest(raw, LENIENT, expected_report_data=SGX_RD, now=SGX_NOW, collateral=coll)
    assert ev.tcb_status == "ConfigurationAndSWHardeningNeeded"
    with pytest.raises(AttestationError, match="INTEL-SA-00615.*accepted_advisories"):
        attest(
            raw,
            replace(LENIENT, accepted_advisories=frozenset({"INTEL-SA-00289"})),
            expected_report_data=SGX_RD,
            now=SGX_NOW,
            collateral=coll,
        )


def test_wrong_report_data_binding_is_refused(vectors: Path) -> None:
    raw, coll = _sgx(vectors)

    with pytest.raises(AttestationError, match="report_data does not bind"):
        attest(
            raw, LENIENT, expected_report_data=b"Hello, world?".ljust(64, b"\0"), now=SGX_NOW, collateral=coll
        )


def test_wrong_mrenclave_is_refused_naming_rule(vectors: Path) -> None:
    raw, coll = _sgx(vectors)
    other = replace(
        LENIENT,
        accept=(
            EnclaveIdentityRule(mrenclave=bytes(32)),
            EnclaveIdentityRule(mrsigner=bytes(32), isv_prod_id=0),
        ),
    )

    with pytest.raises(AttestationError, match=r"accept\[0\]: MRENCLAVE != .*accept\[1\]: MRSIGNER"):
        attest(raw, other, expected_report_data=SGX_RD, now=SGX_NOW, collateral=coll)


@pytest.mark.parametrize("offset", [10, 48 + 64, 48 + 320, 436 + 5, 564 + 100, 1100, 3000])
def test_forged_real_quote_is_refused(vectors: Path, offset: int) -> None:
    raw, coll = _sgx(vectors)
    forged = bytearray(raw)
    forged[offset] ^= 0x01

    with pytest.raises(AttestationError):
        verify_quote(bytes(forged), now=SGX_NOW, collateral=coll)


def test_expired_collateral_is_refused(vectors: Path) -> None:
    raw, coll = _sgx(vectors)

    with pytest.raises(AttestationError, match="DCAP verification failed"):
        verify_quote(raw, now=SGX_NOW + 400 * 86400, collateral=coll)


def test_debug_occlum_enclave_refused_by_production_policy(vectors: Path) -> None:
    raw = (vectors / "trustee/occlum_quote.dat").read_bytes()
    body = parse_quote(raw).body
    assert isinstance(body, SgxReportBody)
    policy = AttestationPolicy(accept=(EnclaveIdentityRule(mrenclave=body.mrenclave),), name="prod")

    with pytest.raises(AttestationError, match=r"MRENCLAVE=8f173e4613ff05c5.*DEBUG enclave"):
        attest(raw, policy, expected_report_data=body.report_data, now=SGX_NOW)


def _sim_identity(debug: bool = False) -> EnclaveIdentity:
    return EnclaveIdentity(os.urandom(32), os.urandom(32), 7, 2, debug)


def _sim_policy(
    platform: SimPlatform, ident: EnclaveIdentity, *, allow_debug: bool = False
) -> AttestationPolicy:
    return AttestationPolicy(
        accept=(EnclaveIdentityRule(mrenclave=ident.mrenclave),),
        name="sim",
        allow_simulation=True,
        simulation_root_der=platform.root_der,
        allow_debug=allow_debug,
    )


def test_simulated_quote_verifies_only_when_policy_allows(platform: SimPlatform) -> None:
    ident, rd = _sim_identity(), bind_report_data(b"test", b"k" * 32, os.urandom(32), b"")
    raw = platform.evidence(ident, rd)

    ev = attest(raw, _sim_policy(platform, ident), expected_report_data=rd)
    assert ev.tee == "sim-sgx" and ev.simulated and ev.mrenclave == ident.mrenclave
    with pytest.raises(AttestationError, match="simulated evidence.*allow_simulation=False"):
        attest(
            raw,
            AttestationPolicy(accept=(EnclaveIdentityRule(mrenclave=ident.mrenclave),)),
            expected_report_data=rd,
            now=int(time.time()),
        )


def test_simulated_quote_under_another_simulation_root_is_refused(platform: SimPlatform) -> None:
    ident, rd = _sim_identity(), bytes(64)
    attacker = SimPlatform()

    with pytest.raises(AttestationError, match="pinned simulation root"):
        attest(attacker.evidence(ident, rd), _sim_policy(platform, ident), expected_report_data=rd)


def test_simulated_evidence_never_passes_appraisal_as_real(platform: SimPlatform) -> None:
    ident, rd = _sim_identity(), bytes(64)
    ev = verify_quote(
        platform.evidence(ident, rd), now=int(time.time()), simulation_root_der=platform.root_der
    )

    with pytest.raises(AttestationError, match="allow_simulation=False"):
        appraise(
            ev,
            AttestationPolicy(accept=(EnclaveIdentityRule(mrenclave=ident.mrenclave),)),
            expected_report_data=rd,
        )


def test_forged_simulated_quote_signature_is_refused(platform: SimPlatform) -> None:
    ident, rd = _sim_identity(), bytes(64)
    raw = bytearray(platform.evidence(ident, rd))
    raw[48 + 320] ^= 1  # attacker rewrites report_data to bind its own key

    with pytest.raises(AttestationError, match="ISV enclave report signature is invalid"):
        attest(bytes(raw), _sim_policy(platform, ident), expected_report_data=bytes(raw[368:432]))


def test_simulated_debug_enclave_refused_by_policy_and_by_dcap_qvl(platform: SimPlatform) -> None:
    ident, rd = _sim_identity(debug=True), bytes(64)
    raw = platform.evidence(ident, rd)

    with pytest.raises(AttestationError, match="DEBUG enclave and allow_debug=False"):
        attest(raw, _sim_policy(platform, ident), expected_report_data=rd)
    # The shared verifier (dcap-qvl) refuses DEBUG enclaves whatever the policy: same as real quotes.
    with pytest.raises(AttestationError, match="Debug mode is enabled"):
        attest(raw, _sim_policy(platform, ident, allow_debug=True), expected_report_data=rd)


def test_min_isv_svn_rule(platform: SimPlatform) -> None:
    ident, rd = _sim_identity(), bytes(64)
    rule = EnclaveIdentityRule(mrsigner=ident.mrsigner, isv_prod_id=7, min_isv_svn=3)
    policy = replace(_sim_policy(platform, ident), accept=(rule,))

    with pytest.raises(AttestationError, match="ISVSVN 2 < min_isv_svn 3"):
        attest(platform.evidence(ident, rd), policy, expected_report_data=rd)


def test_policy_validation() -> None:
    with pytest.raises(ConfigError):
        AttestationPolicy(accept=())
    with pytest.raises(ConfigError, match="isv_prod_id"):
        EnclaveIdentityRule(mrsigner=bytes(32))
    with pytest.raises(ConfigError, match="simulation_root_der"):
        AttestationPolicy(accept=(EnclaveIdentityRule(mrenclave=bytes(32)),), allow_simulation=True)
    with pytest.raises(ConfigError, match="nonce"):
        bind_report_data(b"d", b"k", b"short", b"")
