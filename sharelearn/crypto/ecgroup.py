"""A prime-order elliptic-curve group for base OT and ECDH-style protocols, via PyNaCl/libsodium.

Ristretto255 would be the natural choice, but the installed PyNaCl (1.6.x) exposes no
`crypto_core_ristretto255_*` or `crypto_scalarmult_ristretto255` bindings. We use the
equivalent-strength group PyNaCl does expose: the prime-order subgroup (order L = 2^252 + ...) of
edwards25519, through `crypto_core_ed25519_*` and `crypto_scalarmult_ed25519_noclamp`:

* Points are canonical 32-byte compressed encodings; `is_valid_point` accepts only canonical
  points of the prime-order subgroup (libsodium checks on-curve, not small order, and in the
  main subgroup), so the cofactor 8 never leaks a bit of a scalar.
* `hash_to_group` is Elligator 2 applied twice to two halves of a BLAKE2b-512 digest and added
  (the random-oracle construction of RFC 9380 §6.8.2 shape; libsodium's `from_uniform` clears
  the cofactor, so the result lies in the prime-order subgroup).
* Scalars are 32-byte little-endian integers mod L, never clamped.

Each operation is one libsodium call (~0.1 ms for a scalar multiplication). The `*_many` helpers
loop over points in Python: fine for the 128 base OTs of IKNP; bulk ECDH-PSI uses `x25519.py`.

Leaks: a point reveals nothing about its discrete log (DL / CDH / DDH hardness in this group).
"""

from __future__ import annotations

import hashlib

import numpy as np
from nacl import bindings
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U8Array
from sharelearn.crypto.rng import Rng, random_bytes

__all__ = [
    "DOMAIN",
    "GROUP_NAME",
    "GROUP_ORDER",
    "POINT_BYTES",
    "SCALAR_BYTES",
    "base_mult",
    "hash_to_group",
    "hash_to_group_many",
    "is_valid_point",
    "point_add",
    "point_sub",
    "random_scalar",
    "scalar_mult",
    "scalar_mult_many",
]

GROUP_NAME = "edwards25519-prime-subgroup"
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, prime (RFC 8032 §5.1)
POINT_BYTES = 32
SCALAR_BYTES = 32
DOMAIN = b"sharelearn/ecgroup/hash-to-group/v1\x00"
_NACL_ERRORS = (NaclCryptoError, NaclRuntimeError, ValueError, TypeError)


def _check_point(point: bytes, what: str) -> bytes:
    if not isinstance(point, bytes | bytearray) or len(point) != POINT_BYTES:
        raise CryptoError(f"{what} must be a {POINT_BYTES}-byte point encoding")
    if not bindings.crypto_core_ed25519_is_valid_point(bytes(point)):
        raise CryptoError(f"{what} is not a canonical point of the prime-order subgroup")
    return bytes(point)


def _check_scalar(scalar: bytes) -> bytes:
    if not isinstance(scalar, bytes | bytearray) or len(scalar) != SCALAR_BYTES:
        raise CryptoError(f"scalar must be {SCALAR_BYTES} bytes")
    value = int.from_bytes(scalar, "little")
    if not 0 < value < GROUP_ORDER:
        raise CryptoError("scalar must lie in [1, L)")
    return bytes(scalar)


def is_valid_point(point: bytes) -> bool:
    """Return whether `point` encodes a point of the prime-order subgroup (not the identity)."""
    return (
        isinstance(point, bytes | bytearray)
        and len(point) == POINT_BYTES
        and bool(bindings.crypto_core_ed25519_is_valid_point(bytes(point)))
    )


def random_scalar(rng: Rng | None = None) -> bytes:
    """Return a uniform non-zero scalar mod L (64 random bytes reduced; bias < 2^-250)."""
    for _ in range(8):
        scalar = bindings.crypto_core_ed25519_scalar_reduce(random_bytes(64, rng))
        if any(scalar):
            return bytes(scalar)
    raise CryptoError("random scalar was zero repeatedly: the random source is broken")


def base_mult(scalar: bytes) -> bytes:
    """Return scalar * G for the standard base point G."""
    try:
        return bytes(bindings.crypto_scalarmult_ed25519_base_noclamp(_check_scalar(scalar)))
    except _NACL_ERRORS as exc:
        raise CryptoError("base point multiplication failed") from exc


def scalar_mult(scalar: bytes, point: bytes, *, what: str = "point") -> bytes:
    """Return scalar * point; raises CryptoError if `point` is not a valid subgroup point."""
    checked = _check_point(point, what)
    try:
        return bytes(bindings.crypto_scalarmult_ed25519_noclamp(_check_scalar(scalar), checked))
    except _NACL_ERRORS as exc:
        raise CryptoError(f"scalar multiplication of {what} failed") from exc


def scalar_mult_many(scalar: bytes, points: U8Array) -> U8Array:
    """Multiply each row of `points` (N, 32) by one scalar; returns (N, 32)."""
    if points.dtype != np.uint8 or points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise CryptoError(f"points must be a uint8 (N, 32) array, got {points.dtype} {points.shape}")
    out = b"".join(scalar_mult(scalar, row.tobytes(), what=f"point {i}") for i, row in enumerate(points))
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, POINT_BYTES).copy()


def point_add(p: bytes, q: bytes) -> bytes:
    """Return p + q."""
    try:
        return bytes(bindings.crypto_core_ed25519_add(_check_point(p, "p"), _check_point(q, "q")))
    except _NACL_ERRORS as exc:
        raise CryptoError("point addition failed") from exc


def point_sub(p: bytes, q: bytes) -> bytes:
    """Return p - q."""
    try:
        return bytes(bindings.crypto_core_ed25519_sub(_check_point(p, "p"), _check_point(q, "q")))
    except _NACL_ERRORS as exc:
        raise CryptoError("point subtraction failed") from exc


def hash_to_group(data: bytes, domain: bytes = DOMAIN) -> bytes:
    """Hash bytes to a point of the prime-order subgroup (random-oracle style, two Elligator maps)."""
    digest = hashlib.blake2b(len(domain).to_bytes(2, "little") + domain + data, digest_size=64).digest()
    try:
        p1 = bindings.crypto_core_ed25519_from_uniform(digest[:32])
        p2 = bindings.crypto_core_ed25519_from_uniform(digest[32:])
        return bytes(bindings.crypto_core_ed25519_add(p1, p2))
    except _NACL_ERRORS as exc:  # p1 = -p2 has probability ~2^-252
        raise CryptoError("hash_to_group hit the identity") from exc


def hash_to_group_many(items: list[bytes], domain: bytes = DOMAIN) -> U8Array:
    """`hash_to_group` for each item; returns (N, 32) uint8."""
    out = b"".join(hash_to_group(x, domain) for x in items)
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, POINT_BYTES).copy()
