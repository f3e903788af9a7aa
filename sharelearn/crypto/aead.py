"""Authenticated encryption with associated data: the one home of `cryptography`'s AEAD classes.

Every module that seals bytes (secure aggregation's share envelopes, TEE data envelopes, sealing,
attested channels) calls `seal` / `open_` here, so the algorithm choice, the key and nonce sizes
and the error a forged or corrupted message raises are decided in one place.

* `chacha20poly1305`: RFC 8439, 256-bit key, 96-bit nonce, 128-bit tag.
* `aes256gcm`: NIST SP 800-38D with a 256-bit key, 96-bit nonce, 128-bit tag.

Both are nonce-misuse *unsafe*: a (key, nonce) pair must never seal two messages. Callers either
draw a fresh random nonce per message (`new_nonce`; 2^32 messages per key keep the collision
chance below 2^-32, SP 800-38D section 8.3) or use a counter under a key that seals nothing else.

What a holder of a sealed message learns without the key: its length (plaintext + 16 bytes) and
the associated data, which is authenticated but not hidden.
"""

from __future__ import annotations

import os
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from sharelearn.core.errors import CryptoError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "AeadAlg",
    "new_key",
    "new_nonce",
    "open_",
    "seal",
]

AeadAlg = Literal["chacha20poly1305", "aes256gcm"]
KEY_BYTES = 32  # both algorithms take 256-bit keys here (AES-128-GCM is not offered)
NONCE_BYTES = 12
TAG_BYTES = 16


def _cipher(key: bytes, alg: AeadAlg) -> AESGCM | ChaCha20Poly1305:
    if len(key) != KEY_BYTES:
        raise CryptoError(f"{alg}: the key must be {KEY_BYTES} bytes, got {len(key)}")
    if alg == "chacha20poly1305":
        return ChaCha20Poly1305(key)
    if alg == "aes256gcm":
        return AESGCM(key)
    raise CryptoError(f"unknown AEAD algorithm {alg!r} (expected 'chacha20poly1305' or 'aes256gcm')")


def _check_nonce(nonce: bytes, alg: AeadAlg) -> None:
    if len(nonce) != NONCE_BYTES:
        raise CryptoError(f"{alg}: the nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")


def new_key() -> bytes:
    """Return a fresh 32-byte AEAD key from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


def new_nonce() -> bytes:
    """Return a fresh random 12-byte nonce from the OS CSPRNG."""
    return os.urandom(NONCE_BYTES)


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"", *, alg: AeadAlg) -> bytes:
    """Encrypt and authenticate `plaintext` and authenticate `aad`: ciphertext || 16-byte tag.

    The nonce is not included in the output; the caller sends or derives it.
    """
    _check_nonce(nonce, alg)
    return _cipher(key, alg).encrypt(nonce, plaintext, aad)


def open_(key: bytes, nonce: bytes, sealed: bytes, aad: bytes = b"", *, alg: AeadAlg) -> bytes:
    """Check the tag of `sealed` (ciphertext || tag) under `aad` and return the plaintext.

    Raises CryptoError when the tag does not verify: a wrong key, nonce or associated data, or a
    modified ciphertext. Nothing of the plaintext is returned in that case.
    """
    _check_nonce(nonce, alg)
    if len(sealed) < TAG_BYTES:
        raise CryptoError(f"{alg}: sealed message of {len(sealed)} bytes is shorter than its tag")
    try:
        return _cipher(key, alg).decrypt(nonce, sealed, aad)
    except InvalidTag as exc:
        raise CryptoError(
            f"{alg}: authentication failed (wrong key, nonce or associated data, or a modified message)"
        ) from exc
