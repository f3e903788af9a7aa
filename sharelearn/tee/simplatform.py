"""The simulation platform: a trusted local stand-in for the CPU + quoting enclave (no SGX).

It owns a simulation PKI (root "SIMULATION ROOT CA — NOT INTEL SGX" -> simulation PCK -> an
attestation key certified through a simulated QE report, the DCAP v3 structure of TEE.md §1.3)
and a per-platform seal secret. It issues DCAP-*shaped* quotes labelled SIMULATION in-band
(QE vendor id and header user_data), which `attestation.verify_quote` checks with full
signatures against this root only, and `attest` refuses unless a policy sets
`allow_simulation=True` and pins this root.

What simulation does not give: no memory encryption or isolation from root/ptrace, the signing
keys live on the same host, no side-channel resistance. It validates protocol and policy logic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sharelearn.core.errors import CryptoError
from sharelearn.tee.attestation import SIM_QE_MRENCLAVE, SIM_QE_VENDOR_ID, SIM_USER_DATA
from sharelearn.tee.backend import EnclaveIdentity, SealPolicy
from sharelearn.tee.quote import (
    ATT_KEY_ECDSA_P256,
    CERT_TYPE_PCK_CHAIN,
    TEE_TYPE_SGX,
    QuoteHeader,
    QuoteSignature,
    build_sgx_report,
    encode_sgx_quote_v3,
)
from sharelearn.tee.sealing import derive_key

__all__ = ["SIM_ROOT_CN", "SimPlatform"]

SIM_ROOT_CN = "SIMULATION ROOT CA — NOT INTEL SGX"
_VALIDITY = dt.timedelta(days=3650)


def _sign_rs(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _xy(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


class SimPlatform:
    """One simulated machine: quoting enclave, PKI and seal secret (kept in this process).

    Two `SimPlatform` objects are two machines: their roots and seal secrets differ, so quotes
    from one do not verify under the other's root and sealed data does not move between them.
    """

    def __init__(self, *, seal_secret: bytes | None = None) -> None:
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        self._pck_key = ec.generate_private_key(ec.SECP256R1())
        self._att_key = ec.generate_private_key(ec.SECP256R1())
        self._root = _cert(SIM_ROOT_CN, self._root_key, SIM_ROOT_CN, self._root_key, ca=True)
        pck = _cert("SIMULATION PCK — NOT INTEL SGX", self._pck_key, SIM_ROOT_CN, self._root_key, ca=False)
        self._chain_pem = pck.public_bytes(serialization.Encoding.PEM) + self._root.public_bytes(
            serialization.Encoding.PEM
        )
        self._seal_secret = seal_secret if seal_secret is not None else os.urandom(32)
        if len(self._seal_secret) != 32:
            raise CryptoError("SimPlatform seal_secret must be 32 bytes")
        self._qe_auth = os.urandom(32)
        qe_hash = hashlib.sha256(_xy(self._att_key) + self._qe_auth).digest()
        self._qe_report = build_sgx_report(
            mrenclave=SIM_QE_MRENCLAVE,
            mrsigner=hashlib.sha256(b"SML-SIM-QE-SIGNER-v1").digest(),
            isv_prod_id=1,
            isv_svn=1,
            attributes_flags=0x11,  # INIT | PROVISIONKEY, like Intel's QE
            report_data=qe_hash + bytes(32),
        )
        self._qe_report_sig = _sign_rs(self._pck_key, self._qe_report.to_bytes())

    def __repr__(self) -> str:  # keys and the seal secret never reach logs
        return f"SimPlatform(root_sha256={hashlib.sha256(self.root_der).hexdigest()[:16]})"

    @property
    def root_der(self) -> bytes:
        """The simulation root certificate that a simulation-accepting policy must pin."""
        return self._root.public_bytes(serialization.Encoding.DER)

    def quote(self, identity: EnclaveIdentity, report_data: bytes) -> bytes:
        """Issue a SIMULATION-labelled SGX quote v3 over `identity` and `report_data` (64 bytes).

        The identity comes from the platform's own record of what it launched, never from the
        enclave's request (an enclave cannot choose its MRENCLAVE).
        """
        if len(report_data) != 64:
            raise CryptoError(f"report_data must be 64 bytes, got {len(report_data)}")
        header = QuoteHeader(3, ATT_KEY_ECDSA_P256, TEE_TYPE_SGX, 1, 1, SIM_QE_VENDOR_ID, SIM_USER_DATA)
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
