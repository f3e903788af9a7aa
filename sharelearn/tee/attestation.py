"""Quote verification (crypto + TCB) and the single entry point `attest` (verify, then appraise).

Every SGX/TDX quote, real or simulated, is verified by the same verifier, dcap-qvl (TEE.md §1.3,
§2.1): TCB info and QE identity (signatures, dates), PCK chain to the trusted root with the root
CA and PCK CRLs, QE report signature and its binding of the attestation key, ISV signature, PCK
SGX extension (CPUSVN / PCESVN / FMSPC) against the TCB info -> status + advisories. Real quotes
are checked against Intel's root built into dcap-qvl; simulated quotes (`sim.platform.SimPlatform`,
PKI and collateral from `sim.pcs.SimPcs`) against the simulation root a policy pins, and only if
they are labelled SIMULATION in-band (header user_data, inside the signed bytes). Evidence may
carry its collateral (`pack_evidence`): collateral is checked under the root, never trusted for
travelling with the quote. dcap-qvl refuses DEBUG enclaves outright, whatever the policy says.

What the verifier learns: the enclave's identity fields, its 64-byte report_data and its
platform's TCB status. Nothing about the enclave's secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sharelearn.core.errors import AttestationError, ConfigError
from sharelearn.tee.policy import AttestationPolicy, VerifiedEvidence, appraise
from sharelearn.tee.quote import CERT_TYPE_PCK_CHAIN, Quote, SgxReportBody, TdReportBody, parse_quote
from sharelearn.tee.sim.pcs import SIM_FMSPC

__all__ = [
    "EVIDENCE_MAGIC",
    "SIM_QE_MRENCLAVE",
    "SIM_QE_VENDOR_ID",
    "SIM_USER_DATA",
    "QuoteAppraiser",
    "attest",
    "describe_quote",
    "ecdsa_p256_verify",
    "is_simulation_labelled",
    "pack_evidence",
    "unpack_evidence",
    "verify_quote",
]

# In-band SIMULATION labels (TEE.md §2.1), inside the signed header. Simulated quotes carry
# SIM_USER_DATA; their QE vendor id is Intel's, which dcap-qvl requires. SIM_QE_VENDOR_ID labelled
# earlier simulated quotes and is still recognised, so such quotes are refused as simulated.
SIM_QE_VENDOR_ID = b"SMLSIM-NOT-INTEL"
SIM_USER_DATA = b"SML-SIM-NOT-SGX" + bytes(5)
SIM_QE_MRENCLAVE = hashlib.sha256(b"SML-SIM-QE-v1").digest()
EVIDENCE_MAGIC = b"SML-EVIDENCE-v1\0"  # never a quote: quotes start with version 3, 4 or 5 (u16 LE)


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


def _check_sim_root(quote: Quote, root_der: bytes) -> None:
    """Cheap pre-check with a clear error: the quote's PCK chain must end at the pinned root."""
    chain = _pem_chain(quote)
    if len(chain) < 2 or not hmac.compare_digest(
        chain[-1].public_bytes(serialization.Encoding.DER), root_der
    ):
        raise AttestationError(
            f"{describe_quote(quote)}: simulated quote does not chain to the pinned simulation root"
        )


def _verify_sim(quote: Quote, collateral_json: str | None, root_der: bytes, now: int) -> VerifiedEvidence:
    """Verify a simulated quote with dcap-qvl under the pinned simulation root (TEE.md §2.1).

    The same verifier as real quotes (`dcap_qvl.verify_with_root_ca`): TCB-info and QE-identity
    signatures and dates, PCK chain to the pinned root with the root and PCK CRLs, QE report
    signature and binding, ISV signature, PCK SGX extension against the TCB info. Then our own
    checks: the SIMULATION label, the simulation FMSPC, the simulated QE's MRENCLAVE, and that
    dcap-qvl parsed the same identity as we did.
    """
    who = describe_quote(quote)
    if not is_simulation_labelled(quote):
        raise AttestationError(f"{who}: not a SIMULATION-labelled quote; refused against a simulation root")
    if collateral_json is None:
        raise AttestationError(f"{who}: simulated quote came without its collateral (sim PCS)")
    _check_sim_root(quote, root_der)
    qvl = _dcap_qvl()
    try:
        collateral = qvl.QuoteCollateralV3.from_json(collateral_json)
        report = qvl.verify_with_root_ca(quote.raw, collateral, root_der, int(now))
        fmspc = str(qvl.parse_quote(quote.raw).fmspc()).upper()
    except ValueError as exc:
        raise AttestationError(f"{who}: DCAP verification under the simulation root failed: {exc}") from exc
    if fmspc != SIM_FMSPC.hex().upper():
        raise AttestationError(f"{who}: PCK certificate FMSPC {fmspc} is not the simulation FMSPC")
    if not hmac.compare_digest(quote.signature.qe_report.mrenclave, SIM_QE_MRENCLAVE):
        raise AttestationError(f"{who}: QE report is not from the simulation quoting enclave")
    _cross_check(quote, str(report.to_json()))
    advisories = tuple(str(a) for a in report.advisory_ids)
    return _evidence(quote, "sim-sgx", str(report.status), advisories, hashlib.sha256(root_der).digest())


def _dcap_qvl() -> Any:
    try:
        import dcap_qvl
    except ImportError as exc:
        raise ConfigError(
            "verifying SGX/TDX quotes (real or simulated) needs dcap-qvl: pip install 'sharelearn[tee]'"
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


def pack_evidence(quote: bytes, collateral: str) -> bytes:
    """Evidence that carries its collateral: magic ‖ u32 quote length ‖ quote ‖ collateral JSON.

    The collateral is not trusted because it travels with the quote: dcap-qvl checks every item
    of it against the verifier's own root (Intel's, or the simulation root a policy pins).
    """
    return EVIDENCE_MAGIC + struct.pack(">I", len(quote)) + quote + collateral.encode()


def unpack_evidence(evidence: bytes) -> tuple[bytes, str | None]:
    """Split evidence into (quote, collateral JSON or None); a bare quote passes through."""
    if not isinstance(evidence, bytes):
        raise AttestationError(f"evidence must be bytes, got {type(evidence).__name__}")
    if not evidence.startswith(EVIDENCE_MAGIC):
        return evidence, None
    head = len(EVIDENCE_MAGIC)
    if len(evidence) < head + 4:
        raise AttestationError("evidence: truncated after the magic")
    (n,) = struct.unpack(">I", evidence[head : head + 4])
    if len(evidence) < head + 4 + n:
        raise AttestationError(f"evidence: quote length {n} exceeds the {len(evidence)}-byte evidence")
    try:
        collateral = evidence[head + 4 + n :].decode()
    except UnicodeDecodeError as exc:
        raise AttestationError("evidence: collateral is not UTF-8 JSON") from exc
    return evidence[head + 4 : head + 4 + n], collateral


def verify_quote(
    raw: bytes, *, now: int, collateral: str | None = None, simulation_root_der: bytes | None = None
) -> VerifiedEvidence:
    """Verify a quote's signature chain and TCB; do not judge its identity (see `appraise`).

    Real and simulated quotes go through the same verifier, dcap-qvl: real ones against Intel's
    root (built into dcap-qvl), simulated ones against the pinned simulation root only.

    Args:
        raw: quote bytes (SGX v3, TDX v4, or a simulated SGX v3), or `pack_evidence` output.
        now: verification time, Unix seconds (pinned in tests: collateral expires).
        collateral: dcap-qvl collateral JSON (from a PCCS or a cache); if None, the collateral
            carried in the evidence is used.
        simulation_root_der: the pinned simulation root; required for (and only used for)
            quotes labelled SIMULATION. Real quotes are never checked against it.

    Raises:
        AttestationError: malformed quote, broken chain, bad signature, expired or revoked
            collateral, no collateral.
        ConfigError: dcap-qvl is not installed.
    """
    quote_raw, carried = unpack_evidence(raw)
    collateral = collateral if collateral is not None else carried
    quote = parse_quote(quote_raw)
    if is_simulation_labelled(quote):
        if simulation_root_der is None:
            raise AttestationError(
                f"{describe_quote(quote)}: quote is labelled SIMULATION; no simulation root"
            )
        return _verify_sim(quote, collateral, simulation_root_der, now)
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
    quote = parse_quote(unpack_evidence(raw)[0])
    _precheck(quote, policy)
    root = policy.simulation_root_der if policy.allow_simulation else None
    ev = verify_quote(
        raw, now=int(time.time()) if now is None else now, collateral=collateral, simulation_root_der=root
    )
    appraise(ev, policy, expected_report_data=expected_report_data)
    return ev


@dataclass(frozen=True, slots=True)
class QuoteAppraiser:
    """A relying party's verifier: `appraiser(evidence, expected_report_data) -> VerifiedEvidence`.

    `collateral_for(quote)` returns collateral JSON (a PCCS cache) or None to use the collateral
    carried in the evidence; `now` pins time.
    """

    policy: AttestationPolicy
    collateral_for: Callable[[bytes], str | None] | None = field(default=None, repr=False)
    now: int | None = None

    def __call__(self, raw: bytes, expected_report_data: bytes) -> VerifiedEvidence:
        quote = unpack_evidence(raw)[0]
        collateral = None if self.collateral_for is None else self.collateral_for(quote)
        return attest(
            raw, self.policy, expected_report_data=expected_report_data, now=self.now, collateral=collateral
        )
