"""Data envelopes (SMLE2): a party's table encrypted so that only attested enclaves open it.

    file   = "SMLE2\\0" ‖ u32 len ‖ header (canonical JSON) ‖ u32 len ‖ sig ‖ u32 len ‖ kem
             ‖ { u32 len ‖ chunk }*
    H      = SHA-256(header)
    sig    = Ed25519(owner key, "SML-ENVELOPE-OWNER-v1" ‖ H)   the owner's signature
    kem    = HPKE-Seal(ingest_pk, info = "SMLE2" ‖ H, DEK)      RFC 9180 base mode,
             X25519 / HKDF-SHA256 / AES-256-GCM (`cryptography.hazmat.primitives.hpke`)
    chunk_i = AES-256-GCM(DEK, nonce = prefix7 ‖ u32 i ‖ u8 last, aad = H ‖ u32 i ‖ u8 last, rows_i)

The header names the dataset, the owner, the accepted enclave identities (`audience`), the
allowed operations, the cluster/epoch of the ingest key and an expiry; it is bound into the HPKE
`info` and into every chunk's AAD, so changing any header byte (e.g. adding an audience entry),
swapping headers between datasets, reordering, dropping, duplicating or truncating chunks all fail
authentication (`CryptoError`). STREAM-style nonces (index + last flag) detect truncation.

Owner authentication: the header lists the job's data parties with their envelope-signing keys
(`parties`, exchanged over the job's mTLS links before upload, so each key is certified by the
party's job certificate) and is signed by the owner's key. The reader refuses an unsigned
envelope or one whose signature does not verify under `parties[owner]`; `check_parties` (run
inside the enclave over all envelopes of a job) refuses envelopes whose party lists disagree, an
owner with two envelopes, or a listed party without one. A forger who can attest the cluster and
writes an envelope claiming `owner: bank` with its own key is caught: the other parties'
envelopes, signed by them, list bank's real key.

The tool side (`write_envelope`) runs at the data owner after attesting the target cluster
(`keys.verify_statement`); the enclave side (`EnvelopeReader`) checks its own identity is in the
audience, the operation is allowed and the envelope has not expired *before* unwrapping, then
streams chunk by chunk (the memory cap of in-enclave training). An enclave of another
measurement fails the audience check and, holding another ingest key, could not unwrap anyway.

Storage is untrusted and addressed by URL: plain paths and `file://` locally, any other scheme
(`s3://`, `memory://`, ...) through fsspec when it is installed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sharelearn.core.codec import decode, encode, expect_array
from sharelearn.core.errors import AttestationError, ConfigError, CryptoError, DecodeError
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.keys import AttestedClusterKey

__all__ = [
    "ENVELOPE_MAGIC",
    "HPKE_SUITE_NAME",
    "EnvelopeHeader",
    "EnvelopeReader",
    "Rows",
    "check_parties",
    "open_url",
    "rows_of",
    "write_envelope",
]

ENVELOPE_MAGIC = b"SMLE2\0"
_OWNER_CTX = b"SML-ENVELOPE-OWNER-v1"
HPKE_SUITE_NAME = "HPKE-base X25519/HKDF-SHA256/AES-256-GCM"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
MAX_HEADER = 1 << 20
MAX_CHUNK = 256 << 20
_IDS_SEP = "\n"


def open_url(url: str | Path, mode: str) -> AbstractContextManager[IO[bytes]]:
    """Open storage by URL: local path / file:// natively, other schemes via fsspec."""
    text = str(url)
    if "://" not in text or text.startswith("file://"):
        path = Path(text.removeprefix("file://"))
        if "w" in mode:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return open(path, mode)
        except FileNotFoundError as exc:
            raise ConfigError(f"envelope storage {text}: no such file") from exc
    try:
        import fsspec
    except ImportError as exc:
        raise ConfigError(f"envelope storage {text}: URL scheme needs fsspec (pip install fsspec)") from exc
    return fsspec.open(text, mode)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Rows:
    """A chunk of a party's table: string ids, float64 features, optional float64 labels."""

    ids: list[str]
    x: np.ndarray
    y: np.ndarray | None

    def to_bytes(self) -> bytes:
        if any(_IDS_SEP in i for i in self.ids):
            raise ConfigError("envelope: ids must not contain newlines")
        msg: dict[str, Any] = {"ids": _IDS_SEP.join(self.ids), "x": np.ascontiguousarray(self.x, np.float64)}
        if self.y is not None:
            msg["y"] = np.ascontiguousarray(self.y, np.float64)
        return encode(msg)

    @classmethod
    def from_bytes(cls, data: bytes, n_features: int, has_label: bool) -> Rows:
        msg = decode(data, peer="envelope", tag="chunk")
        text = msg.get("ids") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or not isinstance(text, str):
            raise DecodeError("envelope chunk is not a row block")
        ids = text.split(_IDS_SEP) if text else []
        x = expect_array(
            msg.get("x"), peer="envelope", tag="chunk.x", dtype=np.float64, shape=(len(ids), n_features)
        )
        y = None
        if has_label:
            y = expect_array(
                msg.get("y"), peer="envelope", tag="chunk.y", dtype=np.float64, shape=(len(ids),)
            )
        return cls(ids, x, y)


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The authenticated, cleartext header of an envelope (storage learns it; it holds no secret)."""

    dataset: str
    owner: str
    audience: tuple[str, ...]  # accepted MRENCLAVEs (hex)
    allowed_ops: tuple[str, ...]
    cluster: str
    epoch: int
    ingest_pk_fpr: str
    features: tuple[str, ...]
    label: str | None
    created: int
    not_after: int
    nonce_prefix: str
    owner_sig_pk: str = ""  # the owner's Ed25519 key (hex): signs this envelope and its requests
    parties: tuple[tuple[str, str], ...] = ()  # the job's data owners and their keys, sorted

    def to_bytes(self) -> bytes:
        obj = {
            "fmt": "SMLE2",
            "suite": HPKE_SUITE_NAME,
            "dataset": self.dataset,
            "owner": self.owner,
            "audience": list(self.audience),
            "allowed_ops": list(self.allowed_ops),
            "cluster": self.cluster,
            "epoch": self.epoch,
            "ingest_pk_fpr": self.ingest_pk_fpr,
            "features": list(self.features),
            "label": self.label,
            "created": self.created,
            "not_after": self.not_after,
            "nonce_prefix": self.nonce_prefix,
            "owner_sig_pk": self.owner_sig_pk,
            "parties": [list(p) for p in self.parties],
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> EnvelopeHeader:
        try:
            obj = json.loads(raw)
            if obj.pop("fmt") != "SMLE2" or obj.pop("suite") != HPKE_SUITE_NAME:
                raise ValueError("unknown format or suite")
            obj["audience"], obj["allowed_ops"] = tuple(obj["audience"]), tuple(obj["allowed_ops"])
            obj["features"] = tuple(obj["features"])
            obj["parties"] = tuple((str(n), str(k)) for n, k in obj["parties"])
            header = cls(**obj)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(f"envelope header is malformed: {exc}") from exc
        if len(bytes.fromhex(header.nonce_prefix)) != 7:
            raise DecodeError("envelope header: nonce_prefix must be 7 bytes")
        return header


def _fpr(pk: bytes) -> str:
    return hashlib.sha256(b"SML-INGEST-FPR" + pk).hexdigest()[:32]


def _chunk_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, int(last))


def _chunk_aad(h: bytes, index: int, last: bool) -> bytes:
    return h + struct.pack(">IB", index, int(last))


def write_envelope(
    url: str | Path,
    blocks: Iterable[Rows],
    *,
    target: AttestedClusterKey,
    dataset: str,
    owner: str,
    features: Sequence[str],
    label: str | None,
    allowed_ops: Sequence[str],
    audience: Sequence[bytes] | None = None,
    ttl_s: int = 7 * 24 * 3600,
    owner_key: Ed25519PrivateKey | None = None,
    parties: Mapping[str, bytes] | None = None,
) -> EnvelopeHeader:
    """Encrypt row blocks to an *attested* cluster key, sign the header, stream them to `url`.

    `audience` defaults to the attested enclave's own MRENCLAVE. The DEK is random per envelope
    and leaves this process only HPKE-wrapped to `target.ingest_pk`. `owner_key` signs the header
    (a fresh key when None: a single-owner envelope); `parties` maps every data owner of the job
    to its Ed25519 public key (default: just this owner) and must give `owner` this key.
    """
    if not allowed_ops:
        raise ConfigError(f"envelope {dataset!r}: allowed_ops must not be empty")
    owner_key = owner_key or Ed25519PrivateKey.generate()
    own_pk = owner_key.public_key().public_bytes_raw()
    listed = _party_list(dataset, owner, own_pk, parties)
    accepted = _audience(dataset, [target.evidence.mrenclave] if audience is None else list(audience))
    now = int(time.time())
    prefix = os.urandom(7)
    header = EnvelopeHeader(
        dataset=dataset,
        owner=owner,
        audience=accepted,
        allowed_ops=tuple(allowed_ops),
        cluster=target.cluster,
        epoch=target.epoch,
        ingest_pk_fpr=_fpr(target.ingest_pk),
        features=tuple(features),
        label=label,
        created=now,
        not_after=now + ttl_s,
        nonce_prefix=prefix.hex(),
        owner_sig_pk=own_pk.hex(),
        parties=listed,
    )
    raw = header.to_bytes()
    h = hashlib.sha256(raw).digest()
    sig = owner_key.sign(_OWNER_CTX + h)
    dek = AESGCM.generate_key(bit_length=256)
    kem = _SUITE.encrypt(dek, target.public_key, info=b"SMLE2" + h)
    with open_url(url, "wb") as fh:
        fh.write(ENVELOPE_MAGIC + struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(sig)) + sig)
        fh.write(struct.pack(">I", len(kem)) + kem)
        empty = Rows([], np.zeros((0, len(features))), None if label is None else np.zeros(0))
        _write_chunks(fh, AESGCM(dek), prefix, h, blocks, empty)
    return header


def _audience(dataset: str, audience: list[bytes]) -> tuple[str, ...]:
    if not audience or any(len(m) != 32 for m in audience):
        raise ConfigError(f"envelope {dataset!r}: audience must be a non-empty list of 32-byte MRENCLAVEs")
    return tuple(m.hex() for m in audience)


def _write_chunks(
    fh: IO[bytes], aead: AESGCM, prefix: bytes, h: bytes, blocks: Iterable[Rows], empty: Rows
) -> None:
    """Encrypt the blocks as chunks 0..n-1, the last flagged final (`empty` if there is none)."""
    index, pending = 0, None
    for block in blocks:
        if pending is not None:
            _write_chunk(fh, aead, prefix, h, index, False, pending)
            index += 1
        pending = block.to_bytes()
    _write_chunk(fh, aead, prefix, h, index, True, empty.to_bytes() if pending is None else pending)


def _party_list(
    dataset: str, owner: str, own_pk: bytes, parties: Mapping[str, bytes] | None
) -> tuple[tuple[str, str], ...]:
    """The job's (owner, key hex) list, sorted; it must give `owner` the key that signs."""
    listed = dict(parties) if parties is not None else {owner: own_pk}
    if listed.get(owner) != own_pk:
        raise ConfigError(f"envelope {dataset!r}: parties must list owner {owner!r} with the signing key")
    return tuple(sorted((str(n), bytes(k).hex()) for n, k in listed.items()))


def _write_chunk(
    fh: IO[bytes], aead: AESGCM, prefix: bytes, h: bytes, i: int, last: bool, data: bytes
) -> None:
    ct = aead.encrypt(_chunk_nonce(prefix, i, last), data, _chunk_aad(h, i, last))
    fh.write(struct.pack(">I", len(ct)) + ct)


def _read_exact(fh: IO[bytes], n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise CryptoError(f"envelope truncated while reading {what}")
    return bytes(data)


class EnvelopeReader:
    """Enclave side: check audience/op/expiry, unwrap the DEK, stream authenticated row blocks.

    Args:
        url: where the envelope is stored (untrusted).
        identity: this enclave's own identity (from its runtime, not from the host).
        ingest_keys: (cluster, epoch) -> X25519 private key this enclave holds.
        op: the operation the enclave is about to perform (must be in `allowed_ops`).
    """

    def __init__(
        self,
        url: str | Path,
        *,
        identity: EnclaveIdentity,
        ingest_keys: dict[tuple[str, int], X25519PrivateKey],
        op: str,
        now: int | None = None,
    ) -> None:
        self.url = str(url)
        with open_url(url, "rb") as fh:
            if _read_exact(fh, len(ENVELOPE_MAGIC), "magic") != ENVELOPE_MAGIC:
                raise DecodeError(f"{self.url}: not an SMLE2 envelope")
            (hlen,) = struct.unpack(">I", _read_exact(fh, 4, "header length"))
            if hlen > MAX_HEADER:
                raise DecodeError(f"{self.url}: header of {hlen} bytes is too large")
            self._raw = _read_exact(fh, hlen, "header")
            sig = _read_exact(fh, _small_len(fh, self.url, "signature"), "signature")
            kem = _read_exact(fh, _small_len(fh, self.url, "kem"), "kem")
            self._offset = len(ENVELOPE_MAGIC) + 12 + hlen + len(sig) + len(kem)
        self.header = EnvelopeHeader.from_bytes(self._raw)
        hdr = self.header
        where = f"envelope {hdr.dataset!r} ({self.url})"
        _check_owner_signature(hdr, hashlib.sha256(self._raw).digest(), sig, where)
        if not any(hmac.compare_digest(identity.mrenclave.hex(), a) for a in hdr.audience):
            raise AttestationError(
                f"{where}: this enclave (MRENCLAVE {identity.mrenclave.hex()[:16]}…) is not in its audience"
            )
        if op not in hdr.allowed_ops:
            raise AttestationError(f"{where}: operation {op!r} not in allowed_ops {list(hdr.allowed_ops)}")
        if hdr.not_after < (int(time.time()) if now is None else now):
            raise AttestationError(f"{where}: expired at {hdr.not_after}")
        key = ingest_keys.get((hdr.cluster, hdr.epoch))
        if key is None:
            raise CryptoError(
                f"{where}: this enclave holds no ingest key of cluster {hdr.cluster!r} epoch {hdr.epoch}"
            )
        self._h = hashlib.sha256(self._raw).digest()
        try:
            self._dek = _SUITE.decrypt(kem, key, info=b"SMLE2" + self._h)
        except (InvalidTag, ValueError) as exc:
            raise CryptoError(
                f"{where}: cannot unwrap the data key (other cluster key or tampered header)"
            ) from exc

    @property
    def has_label(self) -> bool:
        return self.header.label is not None

    def blocks(self) -> Iterator[Rows]:
        """Decrypt and yield row blocks in order; fail on any reorder, drop, duplicate or truncation."""
        prefix = bytes.fromhex(self.header.nonce_prefix)
        aead = AESGCM(self._dek)
        nfeat = len(self.header.features)
        with open_url(self.url, "rb") as fh:
            fh.seek(self._offset)
            index = 0
            while True:
                head = fh.read(4)
                if len(head) != 4:
                    raise CryptoError(f"envelope {self.header.dataset!r}: truncated (no final chunk)")
                (clen,) = struct.unpack(">I", head)
                if clen > MAX_CHUNK:
                    raise DecodeError(f"envelope {self.header.dataset!r}: chunk {index} too large")
                ct = _read_exact(fh, clen, f"chunk {index}")
                data, last = self._open_chunk(aead, prefix, index, ct)
                yield Rows.from_bytes(data, nfeat, self.has_label)
                if last:
                    if fh.read(1):
                        raise CryptoError(f"envelope {self.header.dataset!r}: data after the final chunk")
                    return
                index += 1

    def _open_chunk(self, aead: AESGCM, prefix: bytes, index: int, ct: bytes) -> tuple[bytes, bool]:
        for last in (False, True):
            try:
                return aead.decrypt(
                    _chunk_nonce(prefix, index, last), ct, _chunk_aad(self._h, index, last)
                ), last
            except InvalidTag:
                continue
        raise CryptoError(
            f"envelope {self.header.dataset!r}: chunk {index} failed authentication "
            "(tampered, reordered, duplicated or from another envelope)"
        )


def _small_len(fh: IO[bytes], url: str, what: str) -> int:
    (n,) = struct.unpack(">I", _read_exact(fh, 4, f"{what} length"))
    if n > 4096:
        raise DecodeError(f"{url}: {what} of {n} bytes is too large")
    return int(n)


def _check_owner_signature(hdr: EnvelopeHeader, h: bytes, sig: bytes, where: str) -> None:
    """The header must be signed by the key its party list gives its owner."""
    listed = dict(hdr.parties)
    if len(listed) != len(hdr.parties):
        raise AttestationError(f"{where}: its party list names a party twice")
    key_hex = listed.get(hdr.owner)
    if key_hex is None or key_hex != hdr.owner_sig_pk:
        raise AttestationError(f"{where}: owner {hdr.owner!r} is not listed with its signing key")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(sig, _OWNER_CTX + h)
    except (InvalidSignature, ValueError) as exc:
        raise AttestationError(
            f"{where}: not signed by owner {hdr.owner!r}'s key (forged or tampered envelope)"
        ) from exc


def check_parties(headers: Sequence[EnvelopeHeader]) -> dict[str, str]:
    """Inside the enclave: the envelopes of one job agree on its parties; one envelope per party.

    Returns owner -> Ed25519 key (hex). Refuses envelopes whose party lists differ (a forger's
    envelope lists its own key for the owner it impersonates; the genuine owners' do not), an
    owner with two envelopes, or a listed party whose envelope is missing.
    """
    if not headers:
        raise ConfigError("no envelopes to train on")
    lists = {h.parties for h in headers}
    if len(lists) != 1:
        who = sorted({f"{h.dataset} (owner {h.owner!r})" for h in headers})
        raise AttestationError(
            f"envelopes {who} disagree on the job's parties and their keys: one of them is forged"
        )
    parties = dict(headers[0].parties)
    owners = [h.owner for h in headers]
    twice = sorted({o for o in owners if owners.count(o) > 1})
    if twice:
        raise AttestationError(f"owner(s) {twice} have more than one envelope in this job")
    missing = sorted(set(parties) - set(owners))
    if missing:
        raise AttestationError(f"no envelope from listed party(ies) {missing}")
    return parties


def rows_of(ids: Sequence[str], x: np.ndarray, y: np.ndarray | None, chunk_rows: int) -> Iterator[Rows]:
    """Split a table into row blocks of at most `chunk_rows` rows."""
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, len(ids), chunk_rows):
        stop = start + chunk_rows
        yield Rows(list(ids[start:stop]), x[start:stop], None if y is None else y[start:stop])
