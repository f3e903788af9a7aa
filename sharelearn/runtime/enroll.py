"""Enrollment: each organisation makes its own key and certificate request; a CA signs it.

`request_certificate` writes `<party>.key` (never leaves the folder) and `<party>.csr`.
`sign_request` is what the federation CA (`sharelearn certs sign`) or the coordinator (against a
one-time enrollment token) runs: it checks the request names a valid party and issues a short-lived
certificate for TLS client + server use. `check_certificate` is the check every control-plane
connection makes: the certificate chains to the CA, is inside its validity window and its serial is
not on the revocation list. `sign_payload` / `verify_payload` sign a worker's approvals.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.fileio import atomic_write_bytes
from sharelearn.runtime.certs import check_party_name, key_pem, subject_name

__all__ = [
    "DEFAULT_CERT_DAYS",
    "canonical_json",
    "check_certificate",
    "make_ca",
    "request_certificate",
    "sign_payload",
    "sign_request",
    "verify_payload",
]

DEFAULT_CERT_DAYS = 90  # short-lived party certificates: re-enroll, rather than rely on revocation alone


def make_ca(out_dir: Path | str, name: str = "sharelearn federation CA", days: int = 3650) -> Path:
    """Create `ca.pem` and `ca.key` (0600) in `out_dir`: the federation CA; return `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject_name(name))
        .issuer_name(subject_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    atomic_write_bytes(out / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(out / "ca.key", key_pem(key)).chmod(0o600)
    return out


def request_certificate(party: str, out_dir: Path | str) -> Path:
    """Make this organisation's private key and a CSR naming `party`; return the CSR's path."""
    check_party_name(party)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject_name(party))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(party)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    atomic_write_bytes(out / f"{party}.key", key_pem(key)).chmod(0o600)
    return atomic_write_bytes(out / f"{party}.csr", csr.public_bytes(serialization.Encoding.PEM))


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    for f in ("ca.pem", "ca.key"):
        if not (ca_dir / f).is_file():
            raise ConfigError(f"{ca_dir / f}: missing; create the federation CA with `sharelearn certs ca`")
    cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca_dir / 'ca.key'}: not an EC private key")
    return cert, key


def sign_request(
    csr_pem: bytes, ca_dir: Path | str, *, party: str | None = None, days: float = DEFAULT_CERT_DAYS
) -> bytes:
    """Issue a certificate for a CSR; `party`, when given, must be the name the CSR asks for."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ConfigError(f"certificate request: not a PEM CSR ({exc})") from exc
    if not csr.is_signature_valid:
        raise CryptoError("certificate request: its signature does not verify")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    check_party_name(cn)
    if party is not None and cn != party:
        raise ConfigError(f"certificate request names party {cn!r}, but it was presented for {party!r}")
    ca, ca_key = _load_ca(Path(ca_dir))
    now = dt.datetime.now(dt.UTC)
    after = now + dt.timedelta(days=days)
    san = x509.SubjectAlternativeName([x509.DNSName(cn), x509.DNSName("localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject_name(cn))
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - dt.timedelta(minutes=5), after - dt.timedelta(minutes=1)))
        .not_valid_after(after)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def check_certificate(
    cert_pem: bytes, ca_pem: bytes, *, revoked: Collection[str] = (), party: str | None = None
) -> str:
    """Return the party a certificate names if it is signed by the CA, valid now and not revoked.

    Raises `CryptoError` naming what is wrong: another CA, expired, not yet valid, revoked serial,
    or another party's name.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CryptoError(f"certificate of {cn!r}: not issued by this federation's CA") from exc
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CryptoError(
            f"certificate of {cn!r}: expired or not yet valid (until {cert.not_valid_after_utc})"
        )
    if format(cert.serial_number, "x") in revoked:
        raise CryptoError(f"certificate of {cn!r}: revoked (serial {cert.serial_number:x})")
    if party is not None and cn != party:
        raise CryptoError(f"certificate names {cn!r}, not {party!r}")
    return cn


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign_payload(key_pem: bytes, payload: Mapping[str, Any]) -> str:
    """ECDSA-SHA256 signature (hex) of the canonical JSON of `payload` by a party's private key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("signing key: not an EC private key")
    return key.sign(canonical_json(payload), ec.ECDSA(hashes.SHA256())).hex()


def verify_payload(cert_pem: bytes, payload: Mapping[str, Any], signature: str) -> None:
    """Raise `CryptoError` unless `signature` is the certificate's key signing `payload`."""
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CryptoError("approval: the party's certificate has no EC key")
    try:
        key.verify(bytes.fromhex(signature), canonical_json(payload), ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature) as exc:
        raise CryptoError(f"approval by {payload.get('party')!r}: the signature does not verify") from exc
