"""CSPRNG facade: every random value in the crypto layer is drawn through here.

By default bytes come from the OS CSPRNG (`os.urandom`). Requests above `_URANDOM_LIMIT` bytes
draw a fresh 32-byte seed from the OS and expand it with AES-256-CTR (`prg.expand_array`), which
is indistinguishable from uniform as long as AES is a PRF, and about twice as fast (measured) for
the megabytes that masks and triples need.

Functions take `rng: Rng | None`, where `Rng` is any callable n -> bytes. `None` means the OS
CSPRNG. `SeededRng` exists **only for tests and test vectors**: a seed that a test prints is no
secret, so production code never builds one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeAlias

import numpy as np

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U8Array, U64Array
from sharelearn.crypto import prg

__all__ = ["Rng", "SeededRng", "random_bits", "random_bytes", "random_bytes_array", "random_u64"]

_URANDOM_LIMIT = 4096  # above this, one urandom seed + AES-CTR is faster than the syscall


# A randomness source is any callable n -> n uniformly random bytes: the same convention as
# `modexp.RandBytes`, so `SeededRng(...)` and `random.Random(seed).randbytes` (tests only) work
# everywhere in the crypto layer.
Rng: TypeAlias = Callable[[int], bytes]


class SeededRng:
    """Deterministic AES-CTR generator from a 32-byte seed. TEST-ONLY: never use it for real keys.

    Request i is served from AES-CTR sub-stream i of the seed, so the output depends only on the
    seed and the sequence of request sizes. Callable like any `Rng`.
    """

    __slots__ = ("_offset", "_seed")

    def __init__(self, seed: bytes | int) -> None:
        if isinstance(seed, int):
            if seed < 0:
                raise CryptoError(f"SeededRng integer seed must be non-negative, got {seed}")
            seed = seed.to_bytes(32, "little")
        if len(seed) != 32:
            raise CryptoError(f"SeededRng seed must be 32 bytes, got {len(seed)}")
        self._seed = bytes(seed)
        self._offset = 0

    def __repr__(self) -> str:
        return "SeededRng(<test-only>)"

    def __call__(self, n: int) -> bytes:
        """Return the next `n` bytes of the keystream."""
        return self.random_bytes_array(n).tobytes()

    def random_bytes_array(self, n: int) -> U8Array:
        """Return the next `n` bytes of the keystream as a writable uint8 array."""
        if n < 0:
            raise CryptoError(f"cannot draw {n} random bytes")
        # Each request gets its own CTR sub-stream, so no keystream byte is ever handed out twice.
        out = prg.expand_array(self._seed, n, stream=self._offset)
        self._offset += 1
        return out


def random_bytes_array(n: int, rng: Rng | None = None) -> U8Array:
    """Return `n` uniformly random bytes as a writable uint8 array.

    Raises:
        CryptoError: if `n` is negative.
    """
    if not isinstance(n, int | np.integer) or n < 0:
        raise CryptoError(f"cannot draw {n!r} random bytes")
    n = int(n)
    if rng is not None:
        if isinstance(rng, SeededRng):
            return rng.random_bytes_array(n)
        raw = rng(n)
        if len(raw) != n:
            raise CryptoError(f"rng returned {len(raw)} bytes, {n} requested")
        return np.frombuffer(raw, dtype=np.uint8).copy()
    if n <= _URANDOM_LIMIT:
        return np.frombuffer(os.urandom(n), dtype=np.uint8).copy()
    return prg.expand_array(os.urandom(32), n)


def random_bytes(n: int, rng: Rng | None = None) -> bytes:
    """Return `n` uniformly random bytes from `rng` (default: the OS CSPRNG)."""
    if rng is None and 0 <= n <= _URANDOM_LIMIT:
        return os.urandom(n)
    return random_bytes_array(n, rng).tobytes()


def random_u64(shape: int | tuple[int, ...], rng: Rng | None = None) -> U64Array:
    """Return a writable uint64 array of `shape` with independent uniform entries in Z_2^64."""
    dims = (shape,) if isinstance(shape, int | np.integer) else tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise CryptoError(f"random_u64 shape must be non-negative, got {shape}")
    count = int(np.prod(dims, dtype=np.int64))
    raw = random_bytes_array(8 * count, rng)
    return raw.view("<u8").astype(np.uint64, copy=False).reshape(dims)


def random_bits(shape: int | tuple[int, ...], rng: Rng | None = None) -> U8Array:
    """Return a uint8 array of `shape` with independent uniform bits (0 or 1)."""
    dims = (shape,) if isinstance(shape, int | np.integer) else tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise CryptoError(f"random_bits shape must be non-negative, got {shape}")
    count = int(np.prod(dims, dtype=np.int64))
    raw = random_bytes_array(-(-count // 8), rng)
    return np.unpackbits(raw, count=count).reshape(dims)
