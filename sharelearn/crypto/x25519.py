"""Batched X25519 (RFC 7748) scalar multiplication and hashing onto Curve25519.

`scalarmult` multiplies many points by one secret (ECDH-PSI); `scalarmult_each` takes a secret per
point (secure aggregation agrees keys under two key pairs with 16 neighbours each: 32 rows, four
kernel calls). Two backends compute the same function:

* `mbx`: Intel's multi-buffer `mbx_x25519_mb8` (ipp-crypto, AVX512-IFMA), 8 multiplications per
  call (each lane has its own scalar pointer), ~6.5 us each. Pointer arrays for a whole batch are
  built with numpy arithmetic, so the per-call Python overhead is ~1 us, and ctypes releases the
  GIL so threads use every core.
* `openssl`: OpenSSL's X25519 through `cryptography`, one multiplication per call (~40 us).

Hashing onto the curve: `hash_to_point` maps an id to the u-coordinate BLAKE2b-256(domain || id)
with the top bit cleared (RFC 7748 ignores it anyway). About half of all u-coordinates lie on the
quadratic twist rather than on Curve25519 itself; X25519 is defined on both, the twist's order is
4 * (a 253-bit prime) (Bernstein 2006, "twist security"), and clamped scalars are multiples of 8,
so blinding kills every small-order component and the Diffie-Hellman assumption PSI relies on holds
on both groups. Commutativity x(a*(b*P)) = x(b*(a*P)) holds for every u, which is all ECDH-PSI needs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sharelearn.core.errors import CryptoError
from sharelearn.core.executor import Executor
from sharelearn.core.types import U8Array
from sharelearn.crypto.kernels import mbx
from sharelearn.crypto.kernels.mbx25519 import POINT_BYTES, x25519_chunk

__all__ = ["POINT_BYTES", "backend_name", "hash_to_point", "random_scalar", "scalarmult", "scalarmult_each"]

_CHUNK = 8192  # points per thread task: large enough to amortise scheduling, small for balance
DOMAIN = b"sharelearn/psi/x25519/v1\x00"


def backend_name() -> str:
    """Name of the backend `scalarmult` uses now: "mbx" or "openssl"."""
    return "mbx" if mbx.load() is not None else "openssl"


def random_scalar() -> bytes:
    """Return a fresh 32-byte X25519 secret scalar from the OS CSPRNG."""
    return os.urandom(32)


def hash_to_point(ids: Iterable[bytes], domain: bytes = DOMAIN) -> U8Array:
    """Hash each id to a 32-byte u-coordinate (see the module docstring for why this is sound)."""
    prefix = hashlib.blake2b(domain, digest_size=32)

    def one(x: bytes) -> bytes:
        h = prefix.copy()
        h.update(x)
        return h.digest()

    raw = b"".join([one(x) for x in ids])
    out = np.frombuffer(raw, dtype=np.uint8).reshape(-1, POINT_BYTES).copy()
    out[:, 31] &= 0x7F
    return out


def _openssl_chunk(scalars: U8Array, points: U8Array) -> U8Array:
    keys = [X25519PrivateKey.from_private_bytes(row.tobytes()) for row in scalars]
    flat = points.tobytes()
    try:
        raw = b"".join(
            [
                keys[0 if len(keys) == 1 else r].exchange(X25519PublicKey.from_public_bytes(flat[i : i + 32]))
                for r, i in enumerate(range(0, len(flat), 32))
            ]
        )
    except ValueError as exc:  # an all-zero result: a low-order input point
        raise CryptoError(f"X25519 on a low-order point: {exc}") from exc
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, POINT_BYTES).copy()


def _check_points(points: U8Array, what: str = "points") -> U8Array:
    if points.ndim != 2 or points.shape[1] != POINT_BYTES or points.dtype != np.uint8:
        raise CryptoError(f"{what} must be a (n, 32) uint8 array, got {points.dtype} {points.shape}")
    return np.ascontiguousarray(points)


def scalarmult_each(scalars: U8Array, points: U8Array) -> U8Array:
    """Return X25519(scalars[r], points[r]) for every row r: one secret per row, in one batch.

    For a party that agrees keys under several secrets at once (secure aggregation's two key
    pairs): the multi-buffer kernel takes a scalar per lane, so both sets fill the same batches.

    Raises:
        CryptoError: on mismatched shapes, or if the kernel rejected an input.
    """
    scalars, points = _check_points(scalars, "scalars"), _check_points(points)
    if scalars.shape[0] != points.shape[0]:
        raise CryptoError(f"{scalars.shape[0]} scalars for {points.shape[0]} points")
    if points.shape[0] == 0:
        return np.empty((0, POINT_BYTES), dtype=np.uint8)
    lib = mbx.load()
    return x25519_chunk(lib, scalars, points) if lib is not None else _openssl_chunk(scalars, points)


def _scalarmult_chunk(item: tuple[bytes, U8Array, bool]) -> U8Array:
    """Executor kernel: X25519(scalar, u) for one chunk of points (both backends release the GIL).

    The item carries the caller's backend choice, so a worker process uses the same one.
    """
    scalar, points, use_mbx = item
    key = np.frombuffer(bytes(scalar), dtype=np.uint8).reshape(1, POINT_BYTES)
    lib = mbx.load() if use_mbx else None
    if use_mbx and lib is None:
        raise CryptoError("the mbx X25519 kernel is not available in this worker")
    return x25519_chunk(lib, key, points) if lib is not None else _openssl_chunk(key, points)


def scalarmult(scalar: bytes, points: U8Array, *, executor: Executor | None = None) -> U8Array:
    """Return X25519(scalar, u) for every row u of `points` (shape (n, 32), uint8).

    Args:
        scalar: 32-byte secret scalar (clamped by X25519 itself).
        points: u-coordinates, one per row.
        executor: runs chunks of `_CHUNK` points (None: the calling thread does the whole batch).

    Raises:
        CryptoError: wrong shapes, or the kernel rejected an input.
    """
    if len(scalar) != 32:
        raise CryptoError(f"X25519 scalar must be 32 bytes, got {len(scalar)}")
    points = _check_points(points)
    n = points.shape[0]
    if n == 0:
        return np.empty((0, POINT_BYTES), dtype=np.uint8)
    use_mbx = mbx.is_available()
    if executor is None or executor.parallelism <= 1 or n <= _CHUNK:
        return _scalarmult_chunk((bytes(scalar), points, use_mbx))
    items = [(bytes(scalar), points[i : i + _CHUNK], use_mbx) for i in range(0, n, _CHUNK)]
    return np.concatenate(executor.map(_scalarmult_chunk, items, releases_gil=True))
