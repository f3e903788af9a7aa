"""The numba kernel behind `maskadd`'s fused backend (imported only when numba and ipp-crypto load).

Kept in its own module so that numba, and the ~2.5 s first compilation, stay out of every process
that never masks a vector; the compiled kernel is cached beside this file (numba `cache=True`) and
later processes load it in ~0.3 s. ipp-crypto's two AES entry points are bound by symbol name
(`llvmlite.binding.add_symbol`), so the cached machine code carries no process-specific address.

Importing raises ImportError when numba or a checked libippcp is missing.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numba as nb
from llvmlite import binding as llvm

from sharelearn.crypto import prg

_LIB = prg._ipp_aes()
if _LIB is None:
    raise ImportError("ipp-crypto's AES-CTR is not available (missing, or it failed its known-answer check)")
for _name in ("ippsAESInit", "ippsAESEncryptCTR"):
    llvm.add_symbol(_name, ctypes.cast(getattr(_LIB, _name), ctypes.c_void_p).value)

_VOID = nb.types.voidptr
_I32 = nb.types.int32
_init: Any = nb.types.ExternalFunction("ippsAESInit", _I32(_VOID, _I32, _VOID, _I32))
_encrypt_ctr: Any = nb.types.ExternalFunction(
    "ippsAESEncryptCTR", _I32(_VOID, _VOID, _I32, _VOID, _VOID, _I32)
)


def context_bytes() -> int:
    """Size of one ipp AES context (`ippsAESGetSize`)."""
    size = ctypes.c_int()
    if _LIB is None or _LIB.ippsAESGetSize(ctypes.byref(size)) != 0:
        raise ImportError("ippsAESGetSize failed")
    return size.value


@nb.njit(nogil=True, cache=True)
def add_keystreams(
    y: Any, keys: Any, signs: Any, counter: Any, contexts: Any, counters: Any, block: Any, zeros: Any
) -> int:
    """y += signs[j] * keystream(keys[j], counter) for every j, mod the word size of y.

    Walks y in blocks of block.size words: for each block, the next block of every key's keystream
    (ipp's CTR mode advances counters[j] in place) is written into `block` and added to, or taken
    from, y's block while both are in L1. `zeros` holds block.nbytes zero bytes (CTR encrypts them).
    Returns the OR of ipp's status codes (0 when every call succeeded).
    """
    status = 0
    for j in range(keys.shape[0]):
        status |= _init(keys[j].ctypes.data, keys.shape[1], contexts[j].ctypes.data, contexts.shape[1])
        counters[j, :] = counter
    step = block.shape[0]
    for start in range(0, y.shape[0], step):
        m = min(step, y.shape[0] - start)
        for j in range(keys.shape[0]):
            status |= _encrypt_ctr(
                zeros.ctypes.data,
                block.ctypes.data,
                m * block.itemsize,
                contexts[j].ctypes.data,
                counters[j].ctypes.data,
                128,
            )
            # Sliced afresh for every key: a view made once per block and updated in place K times
            # made numba's adds 2.4x slower (0.88 against 0.37 ms for 17 keys over 98,453 words).
            part = y[start : start + m]
            if signs[j] > 0:
                part += block[:m]
            else:
                part -= block[:m]
    return status


__all__ = ["add_keystreams", "context_bytes"]
