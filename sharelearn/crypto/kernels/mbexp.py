"""ipp-crypto's multi-buffer modular exponentiation `mbx_exp{1024,2048,3072,4096}_mb8` (AVX512-IFMA).

Eight independent exponentiations per call. Numbers travel as little-endian 64-bit words
(`to_words` / `from_words`); the pointer arrays for a whole chunk are built with numpy arithmetic.
ctypes releases the GIL during the call. Reached only through `mbx.load()`, so a None library
(absent, wrong CPU, or `force_portable(True)`) sends `modexp` down its gmpy2 path.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from typing import Any, TypeAlias

import gmpy2
import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError

__all__ = ["LANES", "Mpz", "exp_chunk", "from_words", "mbx_supported", "to_words"]

Mpz: TypeAlias = Any  # gmpy2.mpz; gmpy2 ships no type stubs

LANES = 8
_MBX_CLASSES = (1024, 2048, 3072, 4096)
_kernel_lock = threading.Lock()


def _digits52(bits: int) -> int:
    return -(-bits // 52)


def mbx_supported(mod_bits: int) -> int | None:
    """Return the mbx kernel size (1024..4096) that handles `mod_bits`-bit moduli, or None."""
    # Same rule as ipp-crypto's bits_range(): the 52-bit digit count must fit with 2 spare bits.
    if _digits52(mod_bits) != _digits52(mod_bits + 2):
        return None
    for size in _MBX_CLASSES:
        if _digits52(size) == _digits52(mod_bits):
            return size
    return None


def _kernel(lib: ctypes.CDLL, size: int) -> tuple[Any, int]:
    with _kernel_lock:
        fn = getattr(lib, f"mbx_exp{size}_mb8")
        fn.restype = ctypes.c_uint64
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        fn.argtypes += [ctypes.c_void_p, ctypes.c_int]
        bs = lib.mbx_exp_BufferSize
        bs.restype = ctypes.c_int
        bs.argtypes = [ctypes.c_int]
        return fn, int(bs(size))


def to_words(values: Sequence[Mpz], nwords: int) -> npt.NDArray[np.uint64]:
    nbytes = nwords * 8
    raw = b"".join([v.to_bytes(nbytes, "little") for v in values])
    return np.frombuffer(raw, dtype="<u8").reshape(len(values), nwords)


def from_words(words: npt.NDArray[np.uint64], count: int) -> list[Mpz]:
    raw = words[:count].tobytes()
    step = words.shape[1] * 8
    frm = gmpy2.mpz.from_bytes
    return [frm(raw[i : i + step], "little") for i in range(0, len(raw), step)]


def _ptrs(arr: npt.NDArray[Any], rows: int) -> npt.NDArray[np.uint64]:
    stride = np.uint64(arr.strides[0]) if arr.shape[0] > 1 else np.uint64(0)
    return np.uint64(arr.ctypes.data) + np.arange(rows, dtype=np.uint64) * stride


def exp_chunk(
    lib: ctypes.CDLL, bases: Sequence[Mpz], exps: npt.NDArray[np.uint64], exp_bits: int, mod: Mpz
) -> list[Mpz]:
    """bases[i]^exps[i] mod `mod` with the kernel; `exps` holds one row of words per base, or one row."""
    mod_bits = int(mod.bit_length())
    size = mbx_supported(mod_bits)
    if size is None:
        raise CryptoError(f"internal: no mbx kernel for a {mod_bits}-bit modulus")
    fn, blen = _kernel(lib, size)
    count = len(bases)
    padded = -(-count // LANES) * LANES
    nwords = -(-mod_bits // 64)
    base = np.zeros((padded, nwords), dtype=np.uint64)
    base[:count] = to_words(bases, nwords)
    base[count:, 0] = 1
    out = np.empty_like(base)
    modw = to_words([mod], nwords).copy()
    erows = (
        exps
        if exps.shape[0] == 1
        else np.vstack([exps, np.zeros((padded - count, exps.shape[1]), np.uint64)])
    )
    erows = np.ascontiguousarray(erows)
    buf = np.empty(blen + 64, dtype=np.uint8)
    bp, op = _ptrs(base, padded), _ptrs(out, padded)
    ep = _ptrs(erows, padded) if erows.shape[0] > 1 else np.full(padded, erows.ctypes.data, np.uint64)
    mp = np.full(LANES, modw.ctypes.data, dtype=np.uint64)
    step = LANES * 8
    bad = 0
    for k in range(padded // LANES):
        at = k * step
        bad |= fn(op.ctypes.data + at, bp.ctypes.data + at, ep.ctypes.data + at, exp_bits,
                  mp.ctypes.data, mod_bits, buf.ctypes.data, buf.size)  # fmt: skip
    if bad:
        raise CryptoError(f"mbx_exp{size}_mb8 reported a failure (status 0x{bad:x})")
    return from_words(out, count)
