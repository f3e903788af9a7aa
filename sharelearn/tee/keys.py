"""Cluster keys inside an enclave and the attested *cluster key statement* (TEE.md §2.7, §2.8).

Every instance of one enclave service (one measurement) holds the same 32-byte cluster root key
(CRK): the first instance generates it, later ones receive it enclave-to-enclave over a mutually
attested ASC-1 channel (`cluster` key sync). Everything else is derived with HKDF(CRK, label‖epoch):
the X25519 *ingest* key that data envelopes and prediction requests are encrypted to, and the
*model* key that trained models are sealed under. The CRK never leaves an enclave in clear.

The statement is how a relying party (a data owner's tool, a client SDK) learns the ingest key:
the enclave quotes `bind_report_data("sharelearn/cluster-key", ingest_pk, verifier nonce,
H(statement))`, so the key is bound to the hardware (or SIMULATION) evidence and to the
verifier's fresh nonce (no replay). What the verifier learns: cluster id, epoch, the ingest public
key and the enclave identity; nothing secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sharelearn.core.errors import AttestationError, ConfigError, CryptoError, DecodeError
from sharelearn.tee.attestation import attest
from sharelearn.tee.policy import AttestationPolicy, VerifiedEvidence, bind_report_data
from sharelearn.tee.sealing import derive_key

__all__ = [
    "STATEMENT_DOMAIN",
    "AttestedClusterKey",
    "ClusterKeys",
    "make_statement",
    "verify_statement",
    "x25519_public",
]

STATEMENT_DOMAIN = b"sharelearn/cluster-key"
_STATEMENT_TTL_S = 24 * 3600


def x25519_public(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public half of an X25519 key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The cluster root key and what derives from it (lives only inside enclaves)."""

    cluster: str
    epoch: int
    crk: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.crk) != 32:
            raise CryptoError("cluster root key must be 32 bytes")
        if not self.cluster or self.epoch < 1:
            raise ConfigError(
                f"cluster keys need a cluster id and epoch >= 1, got {self.cluster!r}/{self.epoch}"
            )

    @classmethod
    def generate(cls, cluster: str, epoch: int = 1) -> ClusterKeys:
        return cls(cluster, epoch, os.urandom(32))

    def _derive(self, label: bytes) -> bytes:
        info = b"SML-CRK-v1" + label + self.epoch.to_bytes(4, "big") + self.cluster.encode()
        return derive_key(self.crk, salt=b"", info=info)

    @property
    def fingerprint(self) -> str:
        """A public fingerprint of the CRK (what heartbeats report; reveals nothing about it)."""
        return hashlib.sha256(b"SML-CRK-FPR-v1" + self.crk).hexdigest()[:32]

    @property
    def ingest_key(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self._derive(b"ingest"))

    @property
    def ingest_pk(self) -> bytes:
        return x25519_public(self.ingest_key)

    @property
    def model_key(self) -> bytes:
        return self._derive(b"model")

    @property
    def spill_key(self) -> bytes:
        """Key for data an enclave spills to untrusted disk (external-memory training)."""
        return self._derive(b"spill")


def _canonical(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _statement_rd(statement: bytes, ingest_pk: bytes, nonce: bytes) -> bytes:
    return bind_report_data(STATEMENT_DOMAIN, ingest_pk, nonce, hashlib.sha256(statement).digest())


def make_statement(
    keys: ClusterKeys, nonce: bytes, quote_fn: object, *, ttl_s: int = _STATEMENT_TTL_S
) -> tuple[bytes, bytes]:
    """Inside the enclave: (statement, quote) binding the ingest key to the verifier's nonce."""
    if not callable(quote_fn):
        raise ConfigError("make_statement needs the runtime's quote function")
    statement = _canonical(
        {
            "p": "cluster-key",
            "cluster": keys.cluster,
            "epoch": keys.epoch,
            "ingest_pk": keys.ingest_pk.hex(),
            "fpr": keys.fingerprint,
            "not_after": int(time.time()) + ttl_s,
        }
    )
    return statement, quote_fn(_statement_rd(statement, keys.ingest_pk, nonce))


@dataclass(frozen=True, slots=True)
class AttestedClusterKey:
    """A cluster ingest key whose statement verified under the relying party's policy."""

    cluster: str
    epoch: int
    ingest_pk: bytes
    fingerprint: str
    not_after: int
    evidence: VerifiedEvidence

    @property
    def public_key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.ingest_pk)


def verify_statement(
    statement: bytes, quote: bytes, policy: AttestationPolicy, nonce: bytes, *, now: int | None = None
) -> AttestedClusterKey:
    """Verify and appraise a cluster key statement against the caller's own policy and nonce.

    Raises:
        AttestationError: bad quote, identity not accepted, replay (other nonce), expired, or a
            statement that does not match the quoted report_data.
    """
    try:
        obj = json.loads(statement)
        ingest_pk = bytes.fromhex(obj["ingest_pk"])
        cluster, epoch, not_after = str(obj["cluster"]), int(obj["epoch"]), int(obj["not_after"])
        fpr = str(obj["fpr"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"cluster key statement is malformed: {exc}") from exc
    if obj.get("p") != "cluster-key" or len(ingest_pk) != 32:
        raise DecodeError("cluster key statement: wrong purpose or key length")
    ev = attest(quote, policy, expected_report_data=_statement_rd(statement, ingest_pk, nonce), now=now)
    if not_after < (int(time.time()) if now is None else now):
        raise AttestationError(f"cluster key statement of {cluster!r} epoch {epoch} expired at {not_after}")
    return AttestedClusterKey(cluster, epoch, ingest_pk, fpr, not_after, ev)
