"""ipp-crypto's multi-buffer X25519 `mbx_x25519_mb8` (AVX512-IFMA): 8 scalar multiplications per call.

Each lane has its own scalar pointer; pointer arrays for a whole batch are built with numpy
arithmetic, so the per-call Python overhead is ~1 us, and ctypes releases the GIL. Reached only
through `mbx.load()`; `x25519` falls back to OpenSSL when that is None.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U8Array

__all__ = ["POINT_BYTES", "x25519_chunk"]

POINT_BYTES = 32
LANES = 8


def _mb8(lib: ctypes.CDLL) -> Callable[..., int]:
    fn = lib.mbx_x25519_mb8
    fn.restype = ctypes.c_uint32
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return fn


def x25519_chunk(lib: ctypes.CDLL, scalars: U8Array, points: U8Array) -> U8Array:
    """X25519(scalars[r], points[r]) per row; `scalars` has n rows or one row shared by all."""
    n = points.shape[0]
    padded = -(-n // LANES) * LANES
    pts = np.zeros((padded, POINT_BYTES), dtype=np.uint8)
    pts[:n] = points
    pts[n:, 0] = 9  # pad lanes with the base point
    out = np.empty_like(pts)
    rows = np.arange(padded, dtype=np.uint64)
    stride = rows * np.uint64(POINT_BYTES)
    ptrs = np.empty((3, padded), dtype=np.uint64)  # out, scalar and point pointers, lane by lane
    ptrs[0] = np.uint64(out.ctypes.data) + stride
    ptrs[2] = np.uint64(pts.ctypes.data) + stride
    if scalars.shape[0] == 1:
        ptrs[1] = scalars.ctypes.data
    else:
        ptrs[1] = np.uint64(scalars.ctypes.data) + np.minimum(rows, np.uint64(n - 1)) * np.uint64(POINT_BYTES)
    fn = _mb8(lib)
    ob, sb, pb = (int(ptrs.ctypes.data) + k * padded * 8 for k in range(3))
    step = LANES * 8  # bytes of 8 pointers
    failed = 0
    for k in range(padded // LANES):
        failed |= fn(ob + k * step, sb + k * step, pb + k * step)
    if failed:
        raise CryptoError(f"mbx_x25519_mb8 reported a failure (status 0x{failed:x})")
    return out[:n]
