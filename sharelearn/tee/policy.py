"""Appraisal of verified evidence: who the enclave is, on which TCB, bound to which key.

Verification (`attestation.verify_quote`) only proves "a genuine TEE at TCB level X produced
these fields". Whether those fields are acceptable is the relying party's decision, made here by
`appraise` against a frozen `AttestationPolicy` (TEE.md §1.1, §2.3). Every refusal raises
`AttestationError` naming the measurement and the policy clause that failed.

`bind_report_data` defines the exact bytes an enclave puts into REPORTDATA so that a verifier
can check which key, nonce and transcript the hardware statement covers (TEE.md §1.4).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
from dataclasses import dataclass, field

from sharelearn.core.errors import AttestationError, ConfigError

__all__ = [
    "REPORT_DATA_LEN",
    "TCB_STATUSES",
    "AttestationPolicy",
    "EnclaveIdentityRule",
    "VerifiedEvidence",
    "appraise",
    "bind_report_data",
    "check_platform",
]

log = logging.getLogger(__name__)

REPORT_DATA_LEN = 64
MIN_NONCE_LEN = 16  # 128-bit nonces: a collision across handshakes is negligible
TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)


@dataclass(frozen=True, slots=True)
class VerifiedEvidence:
    """Claims of a quote whose signature chain and TCB were verified.

    `tee` is decided by the trust anchor that validated the quote ("sgx"/"tdx" under Intel's
    root, "sim-sgx" under a simulation root), never by a field the quote declares itself.
    TDX evidence fills `mrtd`/`rtmrs`; SGX evidence fills the MRENCLAVE..ISVSVN fields.
    """

    tee: str
    tcb_status: str
    advisories: tuple[str, ...]
    report_data: bytes
    debug: bool
    trust_anchor_sha256: bytes
    mrenclave: bytes = b""
    mrsigner: bytes = b""
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_id: bytes = b""
    config_svn: int = 0
    mrtd: bytes = b""
    rtmrs: tuple[bytes, ...] = ()

    @property
    def simulated(self) -> bool:
        return self.tee.startswith("sim")

    @property
    def measurement(self) -> str:
        """A short printable identity for error messages."""
        if self.tee == "tdx":
            return f"{self.tee} MRTD={self.mrtd.hex()[:16]}…"
        return (
            f"{self.tee} MRENCLAVE={self.mrenclave.hex()[:16]}… MRSIGNER={self.mrsigner.hex()[:16]}… "
            f"ISVPRODID={self.isv_prod_id} ISVSVN={self.isv_svn}"
        )


def _check_len(name: str, value: bytes | None, n: int) -> None:
    if value is not None and len(value) != n:
        raise ConfigError(f"EnclaveIdentityRule.{name} must be {n} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class EnclaveIdentityRule:
    """One accepted identity; every field that is set must match.

    Either `mrenclave` ("exactly this build"), or `mrsigner` + `isv_prod_id` + `min_isv_svn`
    ("this vendor's product, at least this security version"), or `mrtd` for a TDX guest.
    """

    mrenclave: bytes | None = None
    mrsigner: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    mrtd: bytes | None = None

    def __post_init__(self) -> None:
        _check_len("mrenclave", self.mrenclave, 32)
        _check_len("mrsigner", self.mrsigner, 32)
        _check_len("mrtd", self.mrtd, 48)
        if self.mrenclave is None and self.mrsigner is None and self.mrtd is None:
            raise ConfigError("EnclaveIdentityRule needs mrenclave, mrsigner (+ isv_prod_id) or mrtd")
        if self.mrsigner is not None and self.isv_prod_id is None:
            raise ConfigError("EnclaveIdentityRule: mrsigner requires isv_prod_id (SGX product semantics)")
        if self.mrtd is not None and (self.mrenclave is not None or self.mrsigner is not None):
            raise ConfigError("EnclaveIdentityRule: mrtd (TDX) cannot be combined with SGX fields")
        if not 0 <= self.min_isv_svn <= 0xFFFF:
            raise ConfigError(f"EnclaveIdentityRule.min_isv_svn must be in 0..65535, got {self.min_isv_svn}")

    def mismatch(self, ev: VerifiedEvidence) -> str | None:
        """Return why `ev` does not match this rule, or None when it matches."""
        if self.mrtd is not None:
            ok = ev.tee == "tdx" and hmac.compare_digest(self.mrtd, ev.mrtd)
            return None if ok else f"MRTD != {self.mrtd.hex()[:16]}…"
        if ev.tee == "tdx":
            return "SGX rule cannot match TDX evidence"
        if self.mrenclave is not None and not hmac.compare_digest(self.mrenclave, ev.mrenclave):
            return f"MRENCLAVE != {self.mrenclave.hex()[:16]}…"
        if self.mrsigner is not None and not hmac.compare_digest(self.mrsigner, ev.mrsigner):
            return f"MRSIGNER != {self.mrsigner.hex()[:16]}…"
        if self.isv_prod_id is not None and ev.isv_prod_id != self.isv_prod_id:
            return f"ISVPRODID {ev.isv_prod_id} != {self.isv_prod_id}"
        if ev.isv_svn < self.min_isv_svn:
            return f"ISVSVN {ev.isv_svn} < min_isv_svn {self.min_isv_svn}"
        return None


@dataclass(frozen=True, slots=True)
class AttestationPolicy:
    """What a relying party accepts. Production-safe defaults: no debug, no simulation, UpToDate only.

    Attributes:
        accept: accepted identities (at least one; any one matching is enough).
        name: printed in every refusal so operators know which policy refused.
        allow_debug: accept enclaves whose memory a debugger can read. Never in production.
        allow_simulation: accept evidence signed by the simulation root `simulation_root_der`
            (and only that root). Simulation gives no confidentiality (TEE.md §2.4).
        simulation_root_der: the deployment's pinned simulation root certificate (DER).
        accepted_tcb_statuses: TCB statuses accepted from the DCAP verifier.
        accepted_advisories: Intel advisory ids tolerated for a non-UpToDate status;
            None tolerates any advisory of an accepted status.
    """

    accept: tuple[EnclaveIdentityRule, ...]
    name: str = "policy"
    allow_debug: bool = False
    allow_simulation: bool = False
    simulation_root_der: bytes | None = field(default=None, repr=False)
    accepted_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    accepted_advisories: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.accept or not all(isinstance(r, EnclaveIdentityRule) for r in self.accept):
            raise ConfigError(
                f"policy {self.name!r}: accept must be a non-empty tuple of EnclaveIdentityRule"
            )
        unknown = set(self.accepted_tcb_statuses) - TCB_STATUSES
        if unknown or not self.accepted_tcb_statuses:
            raise ConfigError(
                f"policy {self.name!r}: unknown or empty accepted_tcb_statuses {sorted(unknown)}"
            )
        if self.allow_simulation and not self.simulation_root_der:
            raise ConfigError(f"policy {self.name!r}: allow_simulation=True requires simulation_root_der")

    @property
    def simulation_root_sha256(self) -> bytes | None:
        return None if self.simulation_root_der is None else hashlib.sha256(self.simulation_root_der).digest()


def _refuse(ev: VerifiedEvidence, policy: AttestationPolicy, clause: str) -> AttestationError:
    return AttestationError(f"enclave {ev.measurement} refused by policy {policy.name!r}: {clause}")


def check_platform(ev: VerifiedEvidence, policy: AttestationPolicy) -> None:
    """Check the simulation, debug and TCB clauses (everything except identity and binding)."""
    if ev.simulated:
        if not policy.allow_simulation:
            raise _refuse(ev, policy, "simulated evidence (no hardware) and allow_simulation=False")
        root = policy.simulation_root_sha256
        if root is None or not hmac.compare_digest(root, ev.trust_anchor_sha256):
            raise _refuse(ev, policy, "simulation root is not the one pinned by simulation_root_der")
        log.warning("accepting SIMULATED enclave evidence (%s) under policy %r", ev.measurement, policy.name)
    if ev.debug and not policy.allow_debug:
        raise _refuse(ev, policy, "DEBUG enclave (memory readable by a debugger) and allow_debug=False")
    if ev.tcb_status not in policy.accepted_tcb_statuses:
        accepted = sorted(policy.accepted_tcb_statuses)
        raise _refuse(ev, policy, f"TCB status {ev.tcb_status!r} not in accepted_tcb_statuses {accepted}")
    if policy.accepted_advisories is not None:
        extra = sorted(set(ev.advisories) - policy.accepted_advisories)
        if extra:
            raise _refuse(ev, policy, f"advisories {extra} not in accepted_advisories")


def appraise(ev: VerifiedEvidence, policy: AttestationPolicy, *, expected_report_data: bytes) -> None:
    """Decide whether verified evidence is acceptable, including its report_data binding.

    Args:
        ev: evidence from `attestation.verify_quote`.
        policy: the relying party's policy.
        expected_report_data: the 64 bytes the verifier computed itself (`bind_report_data`
            over the key it is about to use, its own fresh nonce and the transcript).

    Raises:
        AttestationError: naming the measurement and the failing clause.
    """
    check_platform(ev, policy)
    reasons = [r for r in (rule.mismatch(ev) for rule in policy.accept) if r is not None]
    if len(reasons) == len(policy.accept):
        detail = "; ".join(f"accept[{i}]: {r}" for i, r in enumerate(reasons))
        raise _refuse(ev, policy, f"identity matches no accepted rule ({detail})")
    if len(expected_report_data) != REPORT_DATA_LEN or not hmac.compare_digest(
        expected_report_data, ev.report_data
    ):
        raise _refuse(ev, policy, "report_data does not bind the expected key/nonce/transcript (replay?)")


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def bind_report_data(domain: bytes, public_key: bytes, nonce: bytes, transcript_hash: bytes) -> bytes:
    """Return the 64-byte REPORTDATA that binds a key to a verifier's nonce and a transcript.

    report_data = SHA-256("SML-RD-v1" ‖ lp(domain) ‖ lp(public_key) ‖ lp(nonce) ‖ lp(transcript_hash))
    ‖ 0^32, with lp = 4-byte big-endian length prefix (no two inputs share an encoding).

    Raises:
        ConfigError: if the nonce is too short to give freshness, or domain/key are empty.
    """
    if len(nonce) < MIN_NONCE_LEN:
        raise ConfigError(f"report_data nonce must be at least {MIN_NONCE_LEN} bytes, got {len(nonce)}")
    if not domain or not public_key:
        raise ConfigError("report_data binding needs a non-empty domain and public key")
    digest = hashlib.sha256(
        b"SML-RD-v1" + _lp(domain) + _lp(public_key) + _lp(nonce) + _lp(transcript_hash)
    ).digest()
    return digest + bytes(REPORT_DATA_LEN - len(digest))
