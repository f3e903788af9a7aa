"""Party identities for secure aggregation: sign with the mTLS key, verify against the job's CA.

A client signs what it tells the other clients through the server (its public keys, the survivor
set it was shown) with the private key of its mTLS certificate, and sends that certificate along.
A receiver accepts a signature only if the certificate was issued by the job's CA (the same CA the
gRPC transport trusts), is valid now, and names in its subject CN the party the signer claims to
be. The server relays these bytes but holds no client's key, so it cannot forge a client's keys or
its survivor set; a certificate of its own names the server, not a client.

Keys: ECDSA P-256 with SHA-256 (what `runtime.certs` issues) or Ed25519.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from sharelearn.core.errors import ConfigError, ProtocolError

__all__ = ["Identity", "Verifier", "ephemeral_identities"]

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class Identity:
    """One party's signing identity: its name, certificate, private key and the job's CA (PEM)."""

    party: str
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes

    def __post_init__(self) -> None:
        self._key()  # fail early on a key that cannot sign
        name = _common_name(_load_cert(self.cert_pem))
        if name != self.party:
            raise ConfigError(f"the certificate of party {self.party!r} names {name!r}")

    def _key(self) -> SigningKey:
        return _load_key(self.key_pem)

    def sign(self, data: bytes) -> bytes:
        """Sign `data` with this party's certificate key."""
        key = self._key()
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    def verifier(self) -> Verifier:
        """A verifier that trusts this identity's CA."""
        return Verifier(self.ca_pem)


@functools.lru_cache(maxsize=64)
def _load_key(key_pem: bytes) -> SigningKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigError(f"a party key must be ECDSA or Ed25519, got {type(key).__name__}")
    return key


@functools.lru_cache(maxsize=4096)
def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ProtocolError(f"a malformed certificate ({exc})") from exc


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()


@functools.lru_cache(maxsize=4096)
def _issued_by(ca_pem: bytes, cert_pem: bytes) -> bool:
    try:
        _load_cert(cert_pem).verify_directly_issued_by(_load_cert(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class Verifier:
    """Checks signatures made by `Identity.sign` against certificates issued by one CA."""

    def __init__(self, ca_pem: bytes) -> None:
        self._ca_pem = ca_pem
        _load_cert(ca_pem)

    def public_key(self, cert_pem: bytes, party: str) -> PublicKey:
        """The key of `cert_pem` if the CA issued it, it is valid now and it names `party`."""
        cert = _load_cert(cert_pem)
        if not _issued_by(self._ca_pem, cert_pem):
            raise ProtocolError(f"secagg: the certificate given for party {party!r} is not from the job's CA")
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ProtocolError(
                f"secagg: the certificate given for party {party!r} is expired or not yet valid"
            )
        name = _common_name(cert)
        if name != party:
            raise ProtocolError(f"secagg: the certificate given for party {party!r} names {name!r}")
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise ProtocolError(f"secagg: the certificate of party {party!r} has an unsupported key type")
        return key

    def verify(self, cert_pem: bytes, party: str, signature: bytes, data: bytes, what: str) -> None:
        """Raise ProtocolError naming `party` and `what` unless `signature` signs `data`."""
        key = self.public_key(cert_pem, party)
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, data)
            else:
                key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise ProtocolError(f"secagg: party {party!r}'s signature on {what} does not verify") from exc


def ephemeral_identities(
    parties: Sequence[str], *, ca_name: str = "sharelearn simulation CA"
) -> dict[str, Identity]:
    """A throwaway in-memory CA and one identity per party (simulations and tests; nothing on disk)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    out: dict[str, Identity] = {}
    for p in parties:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, p)]))
            .issuer_name(ca_subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        out[p] = Identity(p, cert.public_bytes(serialization.Encoding.PEM), key_pem, ca_pem)
    return out
