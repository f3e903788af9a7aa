"""Key derivation: the one home of `cryptography`'s KDF classes, and of our one-step KDF.

* `hkdf_sha256`: HKDF with SHA-256 (RFC 5869), extract-then-expand. Use it whenever the input key
  material is not already uniform (a Diffie-Hellman secret, a platform secret) or many keys of
  different lengths come from one secret.
* `one_step_sha256`: the one-step KDF of NIST SP 800-56C Rev. 2 section 4.1 with H = SHA-256 and a
  single block, SHA-256(counter 1 || Z || info) truncated to `length` <= 32 bytes. Secure
  aggregation derives one key per pair with it (one hash per key, cheap in batches).

Every derived key is bound to its purpose through `info`: two purposes must never share an `info`.
What an observer of derived keys learns about the input: nothing beyond the keys themselves
(both are PRFs of the secret under the random-oracle/HMAC assumptions of their standards).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sharelearn.core.errors import CryptoError

__all__ = ["hkdf_sha256", "one_step_sha256"]

_HKDF_MAX = 255 * 32  # RFC 5869 section 2.3: L <= 255 * HashLen
_ONE_STEP_COUNTER = b"\x00\x00\x00\x01"


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """Derive `length` bytes from `ikm` with HKDF-SHA256 (RFC 5869); salt None means HashLen zeros."""
    if not 1 <= length <= _HKDF_MAX:
        raise CryptoError(f"hkdf_sha256: length must be in 1..{_HKDF_MAX}, got {length}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def one_step_sha256(shared: bytes, *, info: bytes, length: int) -> bytes:
    """Derive `length` <= 32 bytes as SHA-256(00000001 || shared || info) (SP 800-56C, one block)."""
    if not 1 <= length <= 32:
        raise CryptoError(f"one_step_sha256: length must be in 1..32, got {length}")
    return hashlib.sha256(_ONE_STEP_COUNTER + shared + info).digest()[:length]
