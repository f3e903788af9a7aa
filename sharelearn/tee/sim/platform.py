"""The simulation platform: a trusted local stand-in for the CPU + quoting enclave (no SGX).

It owns a simulated PCS (`sim.pcs.SimPcs`: root "SIMULATION ROOT CA — NOT INTEL SGX" -> PCK
Platform CA -> PCK certificate with an SGX extension; TCB-signing certificate; signed TCB info
and QE identity; root and PCK CRLs), an attestation key certified through a simulated QE report
(the DCAP v3 structure of TEE.md §1.3) and a per-platform seal secret. It issues DCAP quotes
labelled SIMULATION in-band (header user_data) carrying the full PCK chain (cert type 5);
`evidence` packs a quote with the platform's collateral, which `attestation.verify_quote` checks
with dcap-qvl under this root only, and `attest` refuses unless a policy sets
`allow_simulation=True` and pins this root. PKI and collateral are made once per platform start.

What simulation does not give: no memory encryption or isolation from root/ptrace, the signing
keys live on the same host, no side-channel resistance. It validates protocol and policy logic.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sharelearn.core.errors import CryptoError
from sharelearn.tee.attestation import SIM_QE_MRENCLAVE, SIM_USER_DATA, pack_evidence
from sharelearn.tee.backend import EnclaveIdentity, SealPolicy
from sharelearn.tee.quote import (
    ATT_KEY_ECDSA_P256,
    CERT_TYPE_PCK_CHAIN,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    QuoteHeader,
    QuoteSignature,
    build_sgx_report,
    encode_sgx_quote_v3,
)
from sharelearn.tee.sealing import derive_key
from sharelearn.tee.sim.pcs import (
    SIM_PCESVN,
    SIM_QE_ISVPRODID,
    SIM_QE_ISVSVN,
    SIM_QE_MRSIGNER,
    SIM_ROOT_CN,
    SimPcs,
)

__all__ = ["SIM_ROOT_CN", "SimPlatform"]


def _sign_rs(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _xy(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


class SimPlatform:
    """One simulated machine: quoting enclave, PKI and seal secret (kept in this process).

    Two `SimPlatform` objects are two machines: their roots and seal secrets differ, so quotes
    from one do not verify under the other's root and sealed data does not move between them.
    """

    def __init__(self, *, seal_secret: bytes | None = None) -> None:
        self.pcs = SimPcs()
        self._att_key = ec.generate_private_key(ec.SECP256R1())
        self._chain_pem = self.pcs.pck_chain_pem
        self._seal_secret = seal_secret if seal_secret is not None else os.urandom(32)
        if len(self._seal_secret) != 32:
            raise CryptoError("SimPlatform seal_secret must be 32 bytes")
        self._qe_auth = os.urandom(32)
        qe_hash = hashlib.sha256(_xy(self._att_key) + self._qe_auth).digest()
        self._qe_report = build_sgx_report(
            mrenclave=SIM_QE_MRENCLAVE,
            mrsigner=SIM_QE_MRSIGNER,
            isv_prod_id=SIM_QE_ISVPRODID,
            isv_svn=SIM_QE_ISVSVN,
            attributes_flags=0x11,  # INIT | PROVISIONKEY, like Intel's QE
            report_data=qe_hash + bytes(32),
        )
        self._qe_report_sig = _sign_rs(self.pcs.pck_key, self._qe_report.to_bytes())

    def __repr__(self) -> str:  # keys and the seal secret never reach logs
        return f"SimPlatform(root_sha256={hashlib.sha256(self.root_der).hexdigest()[:16]})"

    @property
    def root_der(self) -> bytes:
        """The simulation root certificate that a simulation-accepting policy must pin."""
        return self.pcs.root_der

    @property
    def collateral_json(self) -> str:
        """The simulated PCS collateral (dcap-qvl JSON) for this platform's quotes."""
        return self.pcs.collateral_json

    def quote(self, identity: EnclaveIdentity, report_data: bytes) -> bytes:
        """Issue a SIMULATION-labelled SGX quote v3 over `identity` and `report_data` (64 bytes).

        The identity comes from the platform's own record of what it launched, never from the
        enclave's request (an enclave cannot choose its MRENCLAVE).
        """
        if len(report_data) != 64:
            raise CryptoError(f"report_data must be 64 bytes, got {len(report_data)}")
        header = QuoteHeader(
            3, ATT_KEY_ECDSA_P256, TEE_TYPE_SGX, SIM_QE_ISVSVN, SIM_PCESVN, INTEL_QE_VENDOR_ID, SIM_USER_DATA
        )
        body = build_sgx_report(
            mrenclave=identity.mrenclave,
            mrsigner=identity.mrsigner,
            isv_prod_id=identity.isv_prod_id,
            isv_svn=identity.isv_svn,
            attributes_flags=identity.attributes_flags,
            report_data=report_data,
        ).to_bytes()
        signature = QuoteSignature(
            isv_signature=_sign_rs(self._att_key, header.to_bytes() + body),
            attestation_key=_xy(self._att_key),
            qe_report=self._qe_report,
            qe_report_signature=self._qe_report_sig,
            qe_auth_data=self._qe_auth,
            cert_type=CERT_TYPE_PCK_CHAIN,
            cert_data=self._chain_pem,
        )
        return encode_sgx_quote_v3(header, body, signature)

    def evidence(self, identity: EnclaveIdentity, report_data: bytes) -> bytes:
        """A quote (see `quote`) packed with this platform's collateral (`pack_evidence`)."""
        return pack_evidence(self.quote(identity, report_data), self.pcs.collateral_json)

    def seal_key(self, identity: EnclaveIdentity, policy: SealPolicy, key_id: bytes, isv_svn: int) -> bytes:
        """EGETKEY analogue: HKDF(seal secret, key_id, policy ‖ identity ‖ svn ‖ debug).

        Raises:
            CryptoError: for isv_svn above the enclave's own (newer data stays unreadable
                to older versions) or an unknown policy.
        """
        if not 0 <= isv_svn <= identity.isv_svn:
            raise CryptoError(
                f"seal key for ISVSVN {isv_svn} refused to an enclave at ISVSVN {identity.isv_svn}"
            )
        if policy == "mrenclave":
            who = identity.mrenclave
        elif policy == "mrsigner":
            who = identity.mrsigner + identity.isv_prod_id.to_bytes(2, "little")
        else:
            raise CryptoError(f"unknown seal policy {policy!r}")
        info = b"SML-SIM-SEAL-v1" + policy.encode() + who + isv_svn.to_bytes(2, "little")
        # A debug build never derives the production build's keys (the DEBUG bit is in the mask).
        info += bytes([identity.attributes_flags & 0xFF])
        return derive_key(self._seal_secret, salt=key_id, info=info)
