"""HE protocol pieces over a Link: ciphertexts on the wire and masked decryption by a key holder.

Masked decryption: a party holding ciphertexts [[v]] under someone else's key adds a mask r drawn
uniformly from [0, max_int / 2) (so |v| << r's range hides v statistically: the distance from
uniform is about |v| / 2^(bits(max_int) - 1), e.g. 2^-1800 for a 100-bit gradient under a
2048-bit Paillier key), sends [[v + r]] as an integer-scale ciphertext, the key holder decrypts
and returns the integers v + r, and the sender subtracts r. The key holder sees only v + r.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from sharelearn.core.codec import expect_type
from sharelearn.core.errors import CryptoError, DecodeError, ProtocolError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.types import PartyId, Wire
from sharelearn.crypto.he import EncArray, Encoded, HEPrivateKey, HEPublicKey, decrypt, public_key_from_wire

__all__ = [
    "MaskedDecryption",
    "masked_decrypt",
    "recv_encrypted",
    "recv_public_key",
    "send_encrypted",
    "serve_masked_decrypt",
]


def send_encrypted(link: Link, peer: PartyId, tag: str, c: EncArray) -> None:
    link.send(peer, tag, c.to_wire())


def recv_encrypted(
    link: Link, peer: PartyId, tag: str, pk: HEPublicKey, *, shape: tuple[int, ...] | None = None
) -> EncArray:
    """Receive ciphertexts under `pk`; errors name the peer and tag."""
    value = link.recv(peer, tag)
    try:
        c = EncArray.from_wire(value, pk)
    except (DecodeError, CryptoError) as exc:
        raise DecodeError(f"{peer}/{tag}: bad ciphertexts: {exc}") from exc
    if shape is not None and c.shape != shape:
        raise ProtocolError(f"{peer}/{tag}: expected ciphertexts of shape {shape}, got {c.shape}")
    return c


def recv_public_key(link: Link, peer: PartyId, tag: str, *, scheme: str, min_bits: int) -> HEPublicKey:
    """Receive a public key of `scheme`, refusing weaker keys than `min_bits`."""
    value = link.recv(peer, tag)
    try:
        pk = public_key_from_wire(value)
    except (DecodeError, CryptoError, ValueError) as exc:
        raise DecodeError(f"{peer}/{tag}: bad public key: {exc}") from exc
    if pk.scheme != scheme:
        raise ProtocolError(f"{peer}/{tag}: expected a {scheme} key, got {pk.scheme}")
    bits = int(pk.cipher_modulus.bit_length()) // (2 if scheme == "paillier" else 1)
    if bits < min_bits - 8:
        raise ProtocolError(f"{peer}/{tag}: key of {bits} bits is below the agreed {min_bits}")
    return pk


@dataclass
class MaskedDecryption:
    """A masked decryption in flight: `start` sends [[v + r]], `finish` takes v + r back and removes r.

    Splitting the two lets a party serve its peer's request in between (two-party protocols).
    """

    link: Link
    keyholder: PartyId
    tag: str
    frac_bits: int
    shape: tuple[int, ...]
    masks: list[int]

    @classmethod
    def start(cls, link: Link, keyholder: PartyId, tag: str, c: EncArray) -> MaskedDecryption:
        if c.pack is not None:
            raise CryptoError("masked decryption works on unpacked ciphertexts")
        bound = c.pk.max_int // 2
        masks = [secrets.randbelow(bound) for _ in range(c.size)]  # a handful per call (a gradient)
        mask_arr = np.empty(c.size, dtype=object)
        mask_arr[:] = masks
        masked = c + Encoded(mask_arr.reshape(c.shape), c.frac_bits)
        link.send(keyholder, tag, dataclasses.replace(masked, frac_bits=0).to_wire())
        return cls(link, keyholder, tag, c.frac_bits, c.shape, masks)

    def finish(self) -> np.ndarray:
        """The plaintexts: float64 when the ciphertexts were scaled, else Python ints."""
        tag = f"{self.tag}.plain"
        values = expect_type(self.link.recv(self.keyholder, tag), list, peer=self.keyholder, tag=tag)
        if len(values) != len(self.masks) or not all(type(v) is int for v in values):
            raise ProtocolError(f"{self.keyholder}/{tag}: expected {len(self.masks)} integers")
        ints = [v - m for v, m in zip(values, self.masks, strict=True)]
        if self.frac_bits == 0:
            out = np.empty(len(ints), dtype=object)
            out[:] = ints
            return out.reshape(self.shape)
        scale = float(2**self.frac_bits)
        return np.array([v / scale for v in ints], dtype=np.float64).reshape(self.shape)


def masked_decrypt(link: Link, keyholder: PartyId, tag: str, c: EncArray) -> np.ndarray:
    """Have `keyholder` decrypt `c` under a one-time mask; return the plaintexts (float64 if scaled)."""
    return MaskedDecryption.start(link, keyholder, tag, c).finish()


def serve_masked_decrypt(
    link: Link, peer: PartyId, tag: str, sk: HEPrivateKey, *, max_size: int, executor: Executor | None = None
) -> int:
    """Answer one `masked_decrypt` from `peer`: decrypt the masked integers and send them back.

    The decryption runs on `executor` (None: the calling thread).
    """
    value: Wire = link.recv(peer, tag)
    try:
        c = EncArray.from_wire(value, sk.public)
    except (DecodeError, CryptoError) as exc:
        raise DecodeError(f"{peer}/{tag}: bad ciphertexts: {exc}") from exc
    if c.frac_bits != 0 or c.pack is not None or c.size > max_size:
        raise ProtocolError(f"{peer}/{tag}: expected at most {max_size} unpacked integer-scale ciphertexts")
    plain: Any = decrypt(sk, c, executor=executor)
    link.send(peer, f"{tag}.plain", [int(v) for v in np.asarray(plain, dtype=object).ravel().tolist()])
    return c.size
