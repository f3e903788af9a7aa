"""Quote verification (crypto + TCB) and the single entry point `attest` (verify, then appraise).

Real quotes (Intel SGX v3 / TDX v4) are verified by dcap-qvl against Intel's root with the
collateral passed in (TEE.md §1.3): PCK chain + CRLs, QE report, QE identity, ISV signature,
TCB level -> status + advisories. Simulated quotes (`sim.SimPlatform`) are DCAP-shaped and
labelled SIMULATION in-band (QE vendor id and header user_data); they are only ever verified
against the simulation root a caller pins, with the same structure checks (PCK chain to the root,
QE report signed by the PCK key, QE report binding the attestation key, ISV signature).

What the verifier learns: the enclave's identity fields, its 64-byte report_data and its
platform's TCB status. Nothing about the enclave's secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sharelearn.core.errors import AttestationError, ConfigError
from sharelearn.tee.policy import AttestationPolicy, VerifiedEvidence, appraise
from sharelearn.tee.quote import CERT_TYPE_PCK_CHAIN, Quote, SgxReportBody, TdReportBody, parse_quote

__all__ = [
    "SIM_QE_MRENCLAVE",
    "SIM_QE_VENDOR_ID",
    "SIM_USER_DATA",
    "QuoteAppraiser",
    "attest",
    "describe_quote",
    "ecdsa_p256_verify",
    "is_simulation_labelled",
    "verify_quote",
]

# In-band SIMULATION labels (TEE.md §2.1). Both are inside the signed header.
SIM_QE_VENDOR_ID = b"SMLSIM-NOT-INTEL"
SIM_USER_DATA = b"SML-SIM-NOT-SGX" + bytes(5)
SIM_QE_MRENCLAVE = hashlib.sha256(b"SML-SIM-QE-v1").digest()


def is_simulation_labelled(quote: Quote) -> bool:
    """True if the quote says it was produced by a simulation platform (either marker)."""
    return quote.header.qe_vendor_id == SIM_QE_VENDOR_ID or quote.header.user_data == SIM_USER_DATA


def describe_quote(quote: Quote) -> str:
    """A short printable identity of a parsed (unverified) quote for error messages."""
    body = quote.body
    if isinstance(body, TdReportBody):
        return f"tdx MRTD={body.mrtd.hex()[:16]}…"
    return f"sgx MRENCLAVE={body.mrenclave.hex()[:16]}… ISVPRODID={body.isv_prod_id} ISVSVN={body.isv_svn}"


def ecdsa_p256_verify(public_xy: bytes, signature_rs: bytes, data: bytes) -> bool:
    """Verify a raw r||s ECDSA-P256/SHA-256 signature under a raw x||y public key."""
    if len(public_xy) != 64 or len(signature_rs) != 64:
        return False
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + public_xy)
        der = encode_dss_signature(
            int.from_bytes(signature_rs[:32], "big"), int.from_bytes(signature_rs[32:], "big")
        )
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _evidence(
    quote: Quote, tee: str, status: str, advisories: tuple[str, ...], anchor: bytes
) -> VerifiedEvidence:
    body = quote.body
    common: dict[str, Any] = {
        "tee": tee,
        "tcb_status": status,
        "advisories": advisories,
        "report_data": body.report_data,
        "debug": body.debug,
        "trust_anchor_sha256": anchor,
    }
    if isinstance(body, TdReportBody):
        return VerifiedEvidence(**common, mrtd=body.mrtd, rtmrs=body.rtmrs)
    return VerifiedEvidence(
        **common,
        mrenclave=body.mrenclave,
        mrsigner=body.mrsigner,
        isv_prod_id=body.isv_prod_id,
        isv_svn=body.isv_svn,
        config_id=body.config_id,
        config_svn=body.config_svn,
    )


def _pem_chain(quote: Quote) -> list[x509.Certificate]:
    if quote.signature.cert_type != CERT_TYPE_PCK_CHAIN:
        raise AttestationError(
            f"{describe_quote(quote)}: certification data type {quote.signature.cert_type}"
        )
    try:
        return x509.load_pem_x509_certificates(quote.signature.cert_data.rstrip(b"\0"))
    except ValueError as exc:
        raise AttestationError(f"{describe_quote(quote)}: unreadable PCK certificate chain: {exc}") from exc


def _check_sim_chain(quote: Quote, root_der: bytes, now: int) -> x509.Certificate:
    chain = _pem_chain(quote)
    who = describe_quote(quote)
    if len(chain) != 2 or not hmac.compare_digest(
        chain[1].public_bytes(serialization.Encoding.DER), root_der
    ):
        raise AttestationError(f"{who}: simulated quote does not chain to the pinned simulation root")
    pck, root = chain
    try:
        root.verify_directly_issued_by(root)
        pck.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise AttestationError(
            f"{who}: simulation PCK certificate not signed by the simulation root"
        ) from exc
    at = datetime.fromtimestamp(now, UTC)
    for cert in chain:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise AttestationError(f"{who}: certificate {cert.subject.rfc4514_string()} not valid at {at}")
    return pck


def _verify_sim(quote: Quote, root_der: bytes, now: int) -> VerifiedEvidence:
    """Verify a simulated DCAP-shaped quote under the pinned simulation root (TEE.md §2.4)."""
    who, sig = describe_quote(quote), quote.signature
    pck_key = _check_sim_chain(quote, root_der, now).public_key()
    if not isinstance(pck_key, ec.EllipticCurvePublicKey):
        raise AttestationError(f"{who}: simulation PCK key is not an EC key")
    pck_xy = pck_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[
        1:
    ]
    if not ecdsa_p256_verify(pck_xy, sig.qe_report_signature, sig.qe_report.to_bytes()):
        raise AttestationError(f"{who}: QE report signature is invalid")
    if not hmac.compare_digest(sig.qe_report.mrenclave, SIM_QE_MRENCLAVE):
        raise AttestationError(f"{who}: QE report is not from the simulation quoting enclave")
    qe_hash = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest()
    if not hmac.compare_digest(sig.qe_report.report_data, qe_hash + bytes(32)):
        raise AttestationError(f"{who}: QE report does not bind the attestation key")
    if not ecdsa_p256_verify(sig.attestation_key, sig.isv_signature, quote.signed_bytes):
        raise AttestationError(f"{who}: ISV enclave report signature is invalid")
    return _evidence(quote, "sim-sgx", "UpToDate", (), hashlib.sha256(root_der).digest())


def _dcap_qvl() -> Any:
    try:
        import dcap_qvl
    except ImportError as exc:
        raise ConfigError(
            "verifying real SGX/TDX quotes needs dcap-qvl: pip install 'sharelearn[tee]'"
        ) from exc
    return dcap_qvl


def _cross_check(quote: Quote, report_json: str) -> None:
    """Refuse if dcap-qvl's parse of the verified quote differs from ours (parser differential)."""
    report = json.loads(report_json).get("report", {})
    fields: dict[str, Any] = next(iter(report.values()), {}) if isinstance(report, dict) else {}
    body = quote.body
    ours = {"report_data": body.report_data.hex()}
    if isinstance(body, SgxReportBody):
        ours |= {"mr_enclave": body.mrenclave.hex(), "mr_signer": body.mrsigner.hex()}
    else:
        ours |= {"mr_td": body.mrtd.hex()}
    for key, value in ours.items():
        if str(fields.get(key, "")).lower() != value:
            raise AttestationError(f"{describe_quote(quote)}: parser disagrees with dcap-qvl on {key}")


def _verify_dcap(quote: Quote, collateral_json: str, now: int) -> VerifiedEvidence:
    qvl = _dcap_qvl()
    who = describe_quote(quote)
    try:
        collateral = qvl.QuoteCollateralV3.from_json(collateral_json)
        report = qvl.verify(quote.raw, collateral, int(now))
    except ValueError as exc:
        raise AttestationError(f"{who}: DCAP verification failed: {exc}") from exc
    _cross_check(quote, str(report.to_json()))
    root = _pem_chain(quote)[-1].public_bytes(serialization.Encoding.DER)
    tee = "tdx" if quote.is_tdx else "sgx"
    advisories = tuple(str(a) for a in report.advisory_ids)
    return _evidence(quote, tee, str(report.status), advisories, hashlib.sha256(root).digest())


def verify_quote(
    raw: bytes, *, now: int, collateral: str | None = None, simulation_root_der: bytes | None = None
) -> VerifiedEvidence:
    """Verify a quote's signature chain and TCB; do not judge its identity (see `appraise`).

    Args:
        raw: quote bytes (SGX v3, TDX v4, or a simulated SGX v3).
        now: verification time, Unix seconds (pinned in tests: collateral expires).
        collateral: dcap-qvl collateral JSON for real quotes (from a PCCS or a cache).
        simulation_root_der: the pinned simulation root; required for (and only used for)
            quotes labelled SIMULATION. Real quotes are never checked against it.

    Raises:
        AttestationError: malformed quote, broken chain, bad signature, expired collateral.
        ConfigError: dcap-qvl is not installed.
    """
    quote = parse_quote(raw)
    if is_simulation_labelled(quote):
        if simulation_root_der is None:
            raise AttestationError(
                f"{describe_quote(quote)}: quote is labelled SIMULATION; no simulation root"
            )
        return _verify_sim(quote, simulation_root_der, now)
    if collateral is None:
        raise AttestationError(f"{describe_quote(quote)}: no collateral given for a DCAP quote")
    return _verify_dcap(quote, collateral, now)


def _precheck(quote: Quote, policy: AttestationPolicy) -> None:
    """Refuse by cheap structural clauses before any cryptography (fail fast, same errors)."""
    who = describe_quote(quote)
    if is_simulation_labelled(quote) and not policy.allow_simulation:
        raise AttestationError(
            f"enclave {who} refused by policy {policy.name!r}: simulated evidence (no hardware) "
            "and allow_simulation=False"
        )
    if quote.body.debug and not policy.allow_debug:
        raise AttestationError(
            f"enclave {who} refused by policy {policy.name!r}: DEBUG enclave and allow_debug=False"
        )


def attest(
    raw: bytes,
    policy: AttestationPolicy,
    *,
    expected_report_data: bytes,
    now: int | None = None,
    collateral: str | None = None,
) -> VerifiedEvidence:
    """Verify a quote and appraise it against `policy` and the expected report_data binding.

    This is the one entry point for real and simulated evidence. Returns the evidence only if
    every clause passes; raises `AttestationError` naming the measurement and clause otherwise.
    """
    quote = parse_quote(raw)
    _precheck(quote, policy)
    root = policy.simulation_root_der if policy.allow_simulation else None
    ev = verify_quote(
        raw, now=int(time.time()) if now is None else now, collateral=collateral, simulation_root_der=root
    )
    appraise(ev, policy, expected_report_data=expected_report_data)
    return ev


@dataclass(frozen=True, slots=True)
class QuoteAppraiser:
    """A relying party's verifier: `appraiser(quote, expected_report_data) -> VerifiedEvidence`.

    `collateral_for` returns the collateral JSON for a real quote (a PCCS cache); `now` pins time.
    """

    policy: AttestationPolicy
    collateral_for: Callable[[bytes], str | None] | None = field(default=None, repr=False)
    now: int | None = None

    def __call__(self, raw: bytes, expected_report_data: bytes) -> VerifiedEvidence:
        collateral = None if self.collateral_for is None else self.collateral_for(raw)
        return attest(
            raw, self.policy, expected_report_data=expected_report_data, now=self.now, collateral=collateral
        )
