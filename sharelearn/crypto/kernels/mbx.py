"""Loader for Intel's crypto kernels: ipp-crypto's multi-buffer `libcrypto_mb` and its `libippcp`.

The multi-buffer kernels (8 X25519 or 8 modular exponentiations per call, AVX512-IFMA) and
`libippcp` (AES-CTR on VAES where the CPU has it, used by `prg.KeystreamWriter`) come from the
`ipp-crypto` wheel; its runtime needs the Intel compiler runtime (`intel-cmplr-lib-rt`), whose
libraries must be loaded globally first. Both wheels put their `.so` files in `<prefix>/lib`.

`load()` returns the library only when it is present *and* `mbx_is_crypto_mb_applicable` says
this CPU can run it; `load_ippcp()` returns libippcp once `ippcpInit` has picked the code path for
this CPU. Every caller keeps a portable fallback, and `force_portable(True)` switches all callers to
it, so tests can exercise both paths on one machine.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["force_portable", "is_available", "is_portable", "lib_dirs", "load", "load_ippcp"]

_RUNTIME_LIBS = ("libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so")
_lock = threading.Lock()
_state = {"forced": False}
_libs: dict[str, ctypes.CDLL | None] = {}  # name -> the library, or None when it is not usable


def lib_dirs() -> list[Path]:
    """Folders where pip puts the wheels' shared libraries."""
    seen: list[Path] = []
    for prefix in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))):
        d = Path(prefix) / "lib"
        if d not in seen and d.is_dir():
            seen.append(d)
    return seen


def _find(name: str) -> ctypes.CDLL | None:
    """`name` from the first wheel folder that has it, after the Intel compiler runtime it links
    against (loaded globally); None when absent or unloadable."""
    for d in lib_dirs():
        if not (d / name).exists():
            continue
        try:
            for runtime in _RUNTIME_LIBS:
                if (d / runtime).exists():
                    ctypes.CDLL(str(d / runtime), mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(str(d / name))
        except OSError:
            return None
    return None


def _try_load() -> ctypes.CDLL | None:
    lib = _find("libcrypto_mb.so")
    if lib is None:
        return None
    check = lib.mbx_is_crypto_mb_applicable
    check.restype = ctypes.c_uint32
    check.argtypes = [ctypes.c_uint64]
    # 0 asks the library to detect the CPU features itself.
    return lib if check(0) else None


def _try_load_ippcp() -> ctypes.CDLL | None:
    lib = _find("libippcp.so")
    if lib is None:
        return None
    lib.ippcpInit.restype = ctypes.c_int
    lib.ippcpInit.argtypes = []
    # ippcpInit picks the fastest code path for this CPU; non-zero is an error status.
    return lib if lib.ippcpInit() == 0 else None


def _cached(name: str, loader: Callable[[], ctypes.CDLL | None]) -> ctypes.CDLL | None:
    """The library `loader` finds, looked for once per process; None while `force_portable`."""
    with _lock:
        if _state["forced"]:
            return None
        if name not in _libs:
            _libs[name] = loader()
        return _libs[name]


def load() -> ctypes.CDLL | None:
    """Return libcrypto_mb when usable on this CPU and not disabled, else None."""
    return _cached("crypto_mb", _try_load)


def load_ippcp() -> ctypes.CDLL | None:
    """Return libippcp when present and not disabled, else None."""
    return _cached("ippcp", _try_load_ippcp)


def is_available() -> bool:
    """True when libcrypto_mb is usable on this CPU and not switched off."""
    return load() is not None


def is_portable() -> bool:
    """True while `force_portable(True)` holds every caller to its portable path."""
    return bool(_state["forced"])


def force_portable(on: bool) -> None:
    """Make every kernel loader return None (True), or find the real libraries again (False)."""
    with _lock:
        _state["forced"] = on
