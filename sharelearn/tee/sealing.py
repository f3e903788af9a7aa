"""Sealed storage: AEAD under a key only the same enclave identity on the same platform derives.

Blob = "SMLSEAL1" ‖ u8 policy ‖ u16 isv_svn ‖ key_id[32] ‖ nonce[12] ‖ ChaCha20-Poly1305 ciphertext,
with the header and the caller's AAD authenticated. The key comes from the platform's EGETKEY
analogue (`EnclaveRuntime.get_seal_key`) for (policy, key_id, isv_svn), so an enclave with another
MRENCLAVE (policy "mrenclave") or another signer/product (policy "mrsigner") derives another
key and unsealing fails with `CryptoError`. Who learns what: the host stores the blob and learns
its length; only the enclave learns the plaintext.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sharelearn.core.errors import CryptoError
from sharelearn.tee.backend import SealPolicy

__all__ = ["SEAL_MAGIC", "SealedHeader", "derive_key", "parse_sealed", "seal_with", "unseal_with"]

SEAL_MAGIC = b"SMLSEAL1"
_POLICIES: dict[str, int] = {"mrenclave": 1, "mrsigner": 2}
_HEADER = struct.Struct(">8sBH32s12s")
KeySource = Callable[[SealPolicy, bytes, int], bytes]


@dataclass(frozen=True, slots=True)
class SealedHeader:
    """The authenticated, cleartext part of a sealed blob."""

    policy: SealPolicy
    isv_svn: int
    key_id: bytes
    nonce: bytes
    raw: bytes


def derive_key(ikm: bytes, *, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 to 32 bytes (never use a platform key directly, TEE.md §2.5)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def parse_sealed(blob: bytes) -> SealedHeader:
    """Parse a sealed blob's header; raise CryptoError if it is not one."""
    if len(blob) < _HEADER.size + 16 or blob[:8] != SEAL_MAGIC:
        raise CryptoError(f"not a sealed blob ({len(blob)} bytes, magic {blob[:8]!r})")
    _, pol, svn, key_id, nonce = _HEADER.unpack_from(blob)
    names = {v: k for k, v in _POLICIES.items()}
    if pol not in names:
        raise CryptoError(f"sealed blob: unknown key policy {pol}")
    policy: SealPolicy = "mrenclave" if names[pol] == "mrenclave" else "mrsigner"
    return SealedHeader(policy, int(svn), bytes(key_id), bytes(nonce), blob[: _HEADER.size])


def seal_with(get_key: KeySource, plaintext: bytes, aad: bytes, *, policy: SealPolicy, isv_svn: int) -> bytes:
    """Seal `plaintext` with a fresh key_id under the key `get_key(policy, key_id, isv_svn)`."""
    if policy not in _POLICIES:
        raise CryptoError(f"unknown seal policy {policy!r} (use 'mrenclave' or 'mrsigner')")
    key_id, nonce = os.urandom(32), os.urandom(12)
    header = _HEADER.pack(SEAL_MAGIC, _POLICIES[policy], isv_svn, key_id, nonce)
    key = get_key(policy, key_id, isv_svn)
    return header + ChaCha20Poly1305(key).encrypt(nonce, plaintext, header + aad)


def unseal_with(get_key: KeySource, blob: bytes, aad: bytes) -> bytes:
    """Unseal a blob; raise CryptoError if this enclave/platform cannot derive its key."""
    head = parse_sealed(blob)
    key = get_key(head.policy, head.key_id, head.isv_svn)
    try:
        return ChaCha20Poly1305(key).decrypt(head.nonce, blob[len(head.raw) :], head.raw + aad)
    except InvalidTag as exc:
        raise CryptoError(
            f"unseal failed (policy {head.policy}, isv_svn {head.isv_svn}): sealed by another enclave "
            "identity or platform, or tampered"
        ) from exc
