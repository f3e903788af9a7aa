"""The simulated PCS: a DCAP PKI and collateral under the simulation root (TEE.md §2.1, §2.4).

Real DCAP quotes are checked by dcap-qvl against Intel's root with Intel-signed collateral. So
that simulated quotes go through the *same* verifier (`dcap_qvl.verify_with_root_ca`), one
simulated platform owns the same structure under its own root, every name saying SIMULATION:

    SIMULATION ROOT CA — NOT INTEL SGX                (self-signed, the root a policy pins)
    ├── SIMULATION PCK Platform CA — NOT INTEL SGX    (issues the PCK leaf and the PCK CRL)
    │   └── SIMULATION PCK Certificate — NOT INTEL SGX (SGX extension: PPID, TCB components,
    │                                                   PCESVN, CPUSVN, PCE-ID, FMSPC, SGX type)
    └── SIMULATION TCB Signing — NOT INTEL SGX        (signs TCB info and QE identity)

plus the root CA CRL, the PCK CRL, a TCB info for the simulation FMSPC (`SMLSIM`, PCE-ID `SM`)
and a QE identity for the simulated quoting enclave's MRSIGNER / ISVPRODID, each with dates and a
raw r||s ECDSA-P256 signature over the document's exact bytes. Everything is generated once per
platform start; `collateral_json` is the dcap-qvl `QuoteCollateralV3` JSON form that
`attestation.verify_quote` and PCCS-lite take. `revoke_pck` re-issues the PCK CRL listing the
PCK serial (a compromised simulated platform), as a PCS would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sharelearn.core.errors import ConfigError

__all__ = [
    "SGX_EXTENSION_OID",
    "SIM_CPUSVN",
    "SIM_FMSPC",
    "SIM_PCESVN",
    "SIM_PCE_ID",
    "SIM_PCK_CA_CN",
    "SIM_PCK_CN",
    "SIM_QE_ISVPRODID",
    "SIM_QE_ISVSVN",
    "SIM_QE_MRSIGNER",
    "SIM_ROOT_CN",
    "SIM_TCB_SIGNING_CN",
    "SimPcs",
    "sgx_pck_extension",
]

SIM_ROOT_CN = "SIMULATION ROOT CA — NOT INTEL SGX"
SIM_PCK_CA_CN = "SIMULATION PCK Platform CA — NOT INTEL SGX"
SIM_PCK_CN = "SIMULATION PCK Certificate — NOT INTEL SGX"
SIM_TCB_SIGNING_CN = "SIMULATION TCB Signing — NOT INTEL SGX"
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
SIM_FMSPC = b"SMLSIM"  # 6 bytes; no Intel FMSPC is ASCII text
SIM_PCE_ID = b"SM"
SIM_PCESVN = 1
SIM_CPUSVN = bytes([1] * 16)
SIM_QE_MRSIGNER = hashlib.sha256(b"SML-SIM-QE-SIGNER-v1").digest()
SIM_QE_ISVPRODID = 1
SIM_QE_ISVSVN = 1
_ORG = "sharelearn simulation (no SGX)"
_CERT_VALIDITY = dt.timedelta(days=3650)
_COLLATERAL_VALIDITY = dt.timedelta(days=30)


# --- a minimal DER writer for the SGX extension (SEQUENCE / OID / INTEGER / OCTET STRING / ENUM) ---


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _entry(oid: str, value: bytes) -> bytes:
    return _der(0x30, _oid(oid) + value)


def sgx_pck_extension(
    *, ppid: bytes, cpusvn: bytes, pcesvn: int, pce_id: bytes, fmspc: bytes, sgx_type: int = 0
) -> bytes:
    """DER value of Intel's SGX extension (OID 1.2.840.113741.1.13.1) in a PCK certificate.

    TCB component i (1..16) is CPUSVN byte i-1, as in Intel's PCK certificates.
    """
    if len(ppid) != 16 or len(cpusvn) != 16 or len(pce_id) != 2 or len(fmspc) != 6:
        raise ConfigError("SGX extension: PPID/CPUSVN 16 bytes, PCE-ID 2 bytes, FMSPC 6 bytes")
    base = SGX_EXTENSION_OID
    tcb = b"".join(_entry(f"{base}.2.{i + 1}", _int(svn)) for i, svn in enumerate(cpusvn))
    tcb += _entry(f"{base}.2.17", _int(pcesvn)) + _entry(f"{base}.2.18", _der(0x04, cpusvn))
    return _der(
        0x30,
        _entry(f"{base}.1", _der(0x04, ppid))
        + _entry(f"{base}.2", _der(0x30, tcb))
        + _entry(f"{base}.3", _der(0x04, pce_id))
        + _entry(f"{base}.4", _der(0x04, fmspc))
        + _entry(f"{base}.5", _der(0x0A, bytes([sgx_type]))),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        ]
    )


def _sign_rs(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class SimPcs:
    """The simulation PKI and collateral of one simulated platform (private keys stay here).

    Args:
        now: issue time (defaults to the wall clock); certificates are valid from a day before.
        collateral_validity: TCB info / QE identity / CRL lifetime (nextUpdate - issue time).
    """

    def __init__(
        self, *, now: dt.datetime | None = None, collateral_validity: dt.timedelta = _COLLATERAL_VALIDITY
    ) -> None:
        self.issued_at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        self.next_update = self.issued_at + collateral_validity
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._tcb_key = ec.generate_private_key(ec.SECP256R1())
        self.pck_key = ec.generate_private_key(ec.SECP256R1())
        self.ppid = b"SMLSIM-PPID-" + os.urandom(4)
        self.root = self._cert(SIM_ROOT_CN, self._root_key, SIM_ROOT_CN, self._root_key, ca=True)
        self.pck_ca = self._cert(SIM_PCK_CA_CN, self._ca_key, SIM_ROOT_CN, self._root_key, ca=True)
        self.tcb_signing = self._cert(SIM_TCB_SIGNING_CN, self._tcb_key, SIM_ROOT_CN, self._root_key)
        ext = sgx_pck_extension(
            ppid=self.ppid, cpusvn=SIM_CPUSVN, pcesvn=SIM_PCESVN, pce_id=SIM_PCE_ID, fmspc=SIM_FMSPC
        )
        self.pck = self._cert(SIM_PCK_CN, self.pck_key, SIM_PCK_CA_CN, self._ca_key, sgx_extension=ext)
        self._revoked: set[int] = set()
        self._collateral = self.signed_collateral()

    def _cert(
        self,
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        *,
        ca: bool = False,
        sgx_extension: bytes | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.issued_at - dt.timedelta(days=1))
            .not_valid_after(self.issued_at + _CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if sgx_extension is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), sgx_extension),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def _crl(self, issuer: str, key: ec.EllipticCurvePrivateKey, revoked: set[int]) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(_name(issuer))
            .last_update(self.issued_at - dt.timedelta(hours=1))
            .next_update(self.next_update)
            .add_extension(x509.CRLNumber(1), critical=False)
        )
        for serial in sorted(revoked):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(self.issued_at - dt.timedelta(minutes=1))
                .build()
            )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def _pem(self, *certs: x509.Certificate) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)

    def tcb_info_doc(self) -> dict[str, Any]:
        """The TCB info for the simulation FMSPC: one level (CPUSVN components, PCESVN) UpToDate."""
        issue = _stamp(self.issued_at)
        return {
            "id": "SGX",
            "version": 3,
            "issueDate": issue,
            "nextUpdate": _stamp(self.next_update),
            "fmspc": SIM_FMSPC.hex().upper(),
            "pceId": SIM_PCE_ID.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 1,
            "tcbLevels": [
                {
                    "tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in SIM_CPUSVN], "pcesvn": SIM_PCESVN},
                    "tcbDate": issue,
                    "tcbStatus": "UpToDate",
                }
            ],
        }

    def qe_identity_doc(self) -> dict[str, Any]:
        """The QE identity of the simulated quoting enclave (MRSIGNER, ISVPRODID, attributes)."""
        issue = _stamp(self.issued_at)
        return {
            "id": "QE",
            "version": 2,
            "issueDate": issue,
            "nextUpdate": _stamp(self.next_update),
            "tcbEvaluationDataNumber": 1,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": SIM_QE_MRSIGNER.hex().upper(),
            "isvprodid": SIM_QE_ISVPRODID,
            "tcbLevels": [{"tcb": {"isvsvn": SIM_QE_ISVSVN}, "tcbDate": issue, "tcbStatus": "UpToDate"}],
        }

    def signed_collateral(
        self, *, tcb_info: dict[str, Any] | None = None, qe_identity: dict[str, Any] | None = None
    ) -> str:
        """Collateral JSON with the given TCB info / QE identity (defaults: the platform's own),
        each signed (raw r||s hex over its exact JSON bytes) by the TCB-signing key."""
        tcb_text = json.dumps(tcb_info or self.tcb_info_doc(), separators=(",", ":"))
        qe_text = json.dumps(qe_identity or self.qe_identity_doc(), separators=(",", ":"))
        tcb_chain = self._pem(self.tcb_signing, self.root)
        return json.dumps(
            {
                "pck_crl_issuer_chain": self._pem(self.pck_ca, self.root),
                "root_ca_crl": self._crl(SIM_ROOT_CN, self._root_key, set()).hex(),
                "pck_crl": self._crl(SIM_PCK_CA_CN, self._ca_key, self._revoked).hex(),
                "tcb_info_issuer_chain": tcb_chain,
                "tcb_info": tcb_text,
                "tcb_info_signature": _sign_rs(self._tcb_key, tcb_text.encode()),
                "qe_identity_issuer_chain": tcb_chain,
                "qe_identity": qe_text,
                "qe_identity_signature": _sign_rs(self._tcb_key, qe_text.encode()),
            }
        )

    @property
    def root_der(self) -> bytes:
        """The simulation root certificate (DER) that a simulation-accepting policy pins."""
        return self.root.public_bytes(serialization.Encoding.DER)

    @property
    def pck_chain_pem(self) -> bytes:
        """The certification data of a quote (type 5): PCK leaf, PCK Platform CA, root."""
        return self._pem(self.pck, self.pck_ca, self.root).encode()

    @property
    def collateral_json(self) -> str:
        """dcap-qvl `QuoteCollateralV3` JSON for this platform's quotes (built once)."""
        return self._collateral

    def revoke_pck(self) -> None:
        """Re-issue the PCK CRL with this platform's PCK certificate serial in it."""
        self._revoked.add(self.pck.serial_number)
        self._collateral = self.signed_collateral()
