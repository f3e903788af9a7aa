"""ASC-1, the attested secure channel (TEE.md §2.7): X25519 + quote-bound keys + AEAD records.

    I (initiator)                                         R (responder, an enclave)
    m1 = "ASC1"‖01‖nI‖eI                     ───────▶
                                             ◀─────── m2 = "ASC1"‖02‖nR‖eR‖len‖evR
        evR = quote(rd_R), rd_R = bind_report_data("sharelearn/asc1/responder", eR, nI, H(m1‖"ASC1"‖02‖nR‖eR))
    I: appraise(evR, policy_I, expected rd_R)  -- a replayed evR fails: nI is fresh per handshake
    m3 = "ASC1"‖03‖len‖evI                   ───────▶   (evI empty unless mutual)
        evI = quote(rd_I), rd_I = bind_report_data("sharelearn/asc1/initiator", eI, nR, H(m1‖m2‖"ASC1"‖03))
    R: appraise(evI, policy_R, expected rd_I) when R requires mutual attestation (key sync)
    keys: HKDF-SHA256(ikm = X25519(eI, eR), salt = nI‖nR, info = "asc1 i2r"|"asc1 r2i" ‖ H(m1‖m2‖m3))
    records: AES-256-GCM, nonce = 0^4‖u64 seq, AAD = direction‖seq‖aad; seq must be exactly next.

What each side learns: I learns R's verified identity and that eR lives inside it; R learns I's
identity only in the mutual variant (otherwise I is anonymous, e.g. a data owner's tool). A
passive observer learns the evidence (identities) and record lengths, nothing else.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sharelearn.core.errors import AttestationError, CryptoError, DecodeError
from sharelearn.core.link import Link
from sharelearn.core.types import PartyId
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule, VerifiedEvidence, bind_report_data

__all__ = [
    "Appraiser",
    "Attester",
    "InitiatorState",
    "ResponderState",
    "Session",
    "initiator_finish",
    "initiator_start",
    "responder_finish",
    "responder_respond",
    "run_initiator",
    "run_responder",
    "same_enclave_policy",
]

MAGIC = b"ASC1"
MAX_EVIDENCE = 64 * 1024
Attester = Callable[[bytes], bytes]  # report_data (64 B) -> quote, called inside the enclave
Appraiser = Callable[[bytes, bytes], VerifiedEvidence]  # (quote, expected report_data) -> evidence


def _pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _evidence_block(msg: bytes, offset: int, what: str) -> bytes:
    if len(msg) < offset + 4:
        raise DecodeError(f"ASC-1 {what}: truncated ({len(msg)} bytes)")
    (n,) = struct.unpack_from(">I", msg, offset)
    if n > MAX_EVIDENCE or len(msg) != offset + 4 + n:
        raise DecodeError(f"ASC-1 {what}: evidence length {n} does not match message length {len(msg)}")
    return msg[offset + 4 :]


def _check_head(msg: bytes, kind: int, min_len: int, what: str) -> None:
    if not isinstance(msg, bytes) or len(msg) < min_len or msg[:4] != MAGIC or msg[4] != kind:
        raise DecodeError(f"ASC-1 {what}: not an ASC-1 message of type {kind}")


@dataclass(frozen=True, slots=True)
class InitiatorState:
    """Initiator secrets between m1 and m2 (never serialised)."""

    key: X25519PrivateKey = field(repr=False)
    nonce: bytes
    m1: bytes


@dataclass(frozen=True, slots=True)
class ResponderState:
    """Responder secrets between m2 and m3 (never serialised)."""

    key: X25519PrivateKey = field(repr=False)
    peer_pub: bytes
    m1: bytes
    m2: bytes


class Session:
    """An established ASC-1 session: ordered, authenticated, encrypted records in both directions."""

    def __init__(
        self,
        *,
        send_key: bytes,
        recv_key: bytes,
        initiator: bool,
        transcript: bytes,
        peer: VerifiedEvidence | None,
    ) -> None:
        self._send, self._recv = AESGCM(send_key), AESGCM(recv_key)
        self._send_dir, self._recv_dir = (b"i2r", b"r2i") if initiator else (b"r2i", b"i2r")
        self._send_seq = 0
        self._recv_seq = 0
        self.transcript_hash = transcript
        self.peer = peer  # the peer's verified evidence; None if the peer did not attest

    def __repr__(self) -> str:
        return f"Session(transcript={self.transcript_hash.hex()[:16]}, attested_peer={self.peer is not None})"

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt the next record to the peer."""
        seq = self._send_seq
        self._send_seq += 1
        nonce = bytes(4) + seq.to_bytes(8, "big")
        return self._send.encrypt(nonce, plaintext, self._send_dir + nonce + aad)

    def open(self, record: bytes, aad: bytes = b"") -> bytes:
        """Decrypt the next record from the peer; replayed, reordered or forged records fail."""
        nonce = bytes(4) + self._recv_seq.to_bytes(8, "big")
        try:
            plaintext = self._recv.decrypt(nonce, record, self._recv_dir + nonce + aad)
        except InvalidTag as exc:
            raise CryptoError(
                f"ASC-1 record {self._recv_seq} failed authentication (forged, replayed or reordered)"
            ) from exc
        self._recv_seq += 1
        return plaintext


def initiator_start() -> tuple[InitiatorState, bytes]:
    """Step 1 (I): a fresh ephemeral key and nonce. Sends m1; reveals nothing about I."""
    key, nonce = X25519PrivateKey.generate(), os.urandom(32)
    m1 = MAGIC + b"\x01" + nonce + _pub(key)
    return InitiatorState(key, nonce, m1), m1


def responder_respond(m1: bytes, *, attester: Attester) -> tuple[ResponderState, bytes]:
    """Step 2 (R, inside the enclave): answer with a quote binding eR to I's nonce and m1."""
    _check_head(m1, 1, 69, "m1")
    if len(m1) != 69:
        raise DecodeError(f"ASC-1 m1: {len(m1)} bytes, expected 69")
    key, nonce = X25519PrivateKey.generate(), os.urandom(32)
    prefix = MAGIC + b"\x02" + nonce + _pub(key)
    rd = bind_report_data(b"sharelearn/asc1/responder", _pub(key), m1[5:37], _h(m1, prefix))
    evidence = attester(rd)
    m2 = prefix + struct.pack(">I", len(evidence)) + evidence
    return ResponderState(key, m1[37:69], m1, m2), m2


def _keys(own: X25519PrivateKey, peer_pub: bytes, salt: bytes, th: bytes) -> tuple[bytes, bytes]:
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(peer_pub))
    except ValueError as exc:  # all-zero output: a small-order point was sent
        raise CryptoError("ASC-1: degenerate X25519 public key from peer") from exc
    i2r = HKDF(hashes.SHA256(), 32, salt, b"asc1 i2r" + th).derive(shared)
    r2i = HKDF(hashes.SHA256(), 32, salt, b"asc1 r2i" + th).derive(shared)
    return i2r, r2i


def initiator_finish(
    state: InitiatorState, m2: bytes, *, appraiser: Appraiser, attester: Attester | None = None
) -> tuple[Session, bytes]:
    """Step 3 (I): appraise R's evidence over (eR, nI, transcript); attest back if mutual.

    Raises:
        AttestationError: R's evidence fails the policy or does not bind eR to this handshake.
    """
    _check_head(m2, 2, 73, "m2")
    r_nonce, r_pub = m2[5:37], m2[37:69]
    evidence = _evidence_block(m2, 69, "m2")
    rd = bind_report_data(b"sharelearn/asc1/responder", r_pub, state.nonce, _h(state.m1, m2[:69]))
    peer = appraiser(evidence, rd)
    own_ev = b""
    if attester is not None:
        own_rd = bind_report_data(
            b"sharelearn/asc1/initiator", _pub(state.key), r_nonce, _h(state.m1, m2, MAGIC + b"\x03")
        )
        own_ev = attester(own_rd)
    m3 = MAGIC + b"\x03" + struct.pack(">I", len(own_ev)) + own_ev
    th = _h(state.m1, m2, m3)
    i2r, r2i = _keys(state.key, r_pub, state.nonce + r_nonce, th)
    return Session(send_key=i2r, recv_key=r2i, initiator=True, transcript=th, peer=peer), m3


def responder_finish(state: ResponderState, m3: bytes, *, appraiser: Appraiser | None = None) -> Session:
    """Step 4 (R): with an appraiser (mutual), require and appraise I's evidence; derive keys."""
    _check_head(m3, 3, 9, "m3")
    evidence = _evidence_block(m3, 5, "m3")
    peer = None
    if appraiser is not None:
        if not evidence:
            raise AttestationError(
                "ASC-1: responder requires mutual attestation but the initiator sent no evidence"
            )
        own_nonce = state.m2[5:37]
        rd = bind_report_data(
            b"sharelearn/asc1/initiator", state.peer_pub, own_nonce, _h(state.m1, state.m2, MAGIC + b"\x03")
        )
        peer = appraiser(evidence, rd)
    th = _h(state.m1, state.m2, m3)
    i2r, r2i = _keys(state.key, state.peer_pub, state.m1[5:37] + state.m2[5:37], th)
    return Session(send_key=r2i, recv_key=i2r, initiator=False, transcript=th, peer=peer)


def _recv_bytes(link: Link, peer: PartyId, tag: str, timeout: float | None) -> bytes:
    value = link.recv(peer, tag, timeout=timeout)
    if not isinstance(value, bytes):
        raise DecodeError(f"{link.me}: ASC-1 {tag} from {peer!r} is not bytes", peer=peer, tag=tag)
    return value


def run_initiator(
    link: Link,
    peer: PartyId,
    *,
    appraiser: Appraiser,
    attester: Attester | None = None,
    timeout: float | None = None,
) -> Session:
    """Run the initiator over a Link (tags asc1/m1..m3); returns the established session."""
    state, m1 = initiator_start()
    link.send(peer, "asc1/m1", m1)
    session, m3 = initiator_finish(
        state, _recv_bytes(link, peer, "asc1/m2", timeout), appraiser=appraiser, attester=attester
    )
    link.send(peer, "asc1/m3", m3)
    return session


def run_responder(
    link: Link,
    peer: PartyId,
    *,
    attester: Attester,
    appraiser: Appraiser | None = None,
    timeout: float | None = None,
) -> Session:
    """Run the responder over a Link; with `appraiser` the initiator must attest too (key sync)."""
    state, m2 = responder_respond(_recv_bytes(link, peer, "asc1/m1", timeout), attester=attester)
    link.send(peer, "asc1/m2", m2)
    return responder_finish(state, _recv_bytes(link, peer, "asc1/m3", timeout), appraiser=appraiser)


def same_enclave_policy(own: EnclaveIdentity, base: AttestationPolicy) -> AttestationPolicy:
    """The key-sync policy "peer has exactly my MRENCLAVE", keeping base's platform clauses."""
    return replace(
        base, accept=(EnclaveIdentityRule(mrenclave=own.mrenclave),), name=f"same-mrenclave({base.name})"
    )
