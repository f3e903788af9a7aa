"""tee layer: attestation (parse, verify, appraise), enclave backends (sim, Gramine-SGX), ASC-1.

Simulation gives no confidentiality: it exercises protocol and policy logic only (TEE.md §2.4).
"""

from __future__ import annotations

from sharelearn.tee.attestation import QuoteAppraiser, attest, verify_quote
from sharelearn.tee.backend import (
    EnclaveBackend,
    EnclaveHandle,
    EnclaveIdentity,
    EnclaveImage,
    EnclaveRuntime,
)
from sharelearn.tee.policy import (
    AttestationPolicy,
    EnclaveIdentityRule,
    VerifiedEvidence,
    appraise,
    bind_report_data,
)
from sharelearn.tee.quote import Quote, parse_quote

__all__ = [
    "AttestationPolicy",
    "EnclaveBackend",
    "EnclaveHandle",
    "EnclaveIdentity",
    "EnclaveIdentityRule",
    "EnclaveImage",
    "EnclaveRuntime",
    "Quote",
    "QuoteAppraiser",
    "VerifiedEvidence",
    "appraise",
    "attest",
    "bind_report_data",
    "parse_quote",
    "verify_quote",
]
