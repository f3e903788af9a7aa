"""Loader for Intel's multi-buffer crypto kernels (ipp-crypto's `libcrypto_mb`).

The kernels (8 X25519 or 8 modular exponentiations per call, AVX512-IFMA) come from the
`ipp-crypto` wheel; its runtime needs the Intel compiler runtime (`intel-cmplr-lib-rt`), whose
libraries must be loaded globally first. Both wheels put their `.so` files in `<prefix>/lib`.

`load()` returns the library only when it is present *and* `mbx_is_crypto_mb_applicable` says
this CPU can run it; every caller keeps a portable fallback. `force_portable(True)` switches all
callers to the fallback, so tests can exercise both paths on one machine.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path

__all__ = ["force_portable", "is_available", "lib_dirs", "load"]

_RUNTIME_LIBS = ("libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so")
_lock = threading.Lock()
_state: dict[str, ctypes.CDLL | bool | None] = {"lib": None, "tried": False, "forced": False}


def lib_dirs() -> list[Path]:
    """Folders where pip puts the wheels' shared libraries."""
    seen: list[Path] = []
    for prefix in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))):
        d = Path(prefix) / "lib"
        if d not in seen and d.is_dir():
            seen.append(d)
    return seen


def _try_load() -> ctypes.CDLL | None:
    for d in lib_dirs():
        target = d / "libcrypto_mb.so"
        if not target.exists():
            continue
        try:
            for name in _RUNTIME_LIBS:
                if (d / name).exists():
                    ctypes.CDLL(str(d / name), mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(str(target))
        except OSError:
            return None
        check = lib.mbx_is_crypto_mb_applicable
        check.restype = ctypes.c_uint32
        check.argtypes = [ctypes.c_uint64]
        # 0 asks the library to detect the CPU features itself.
        return lib if check(0) else None
    return None


def load() -> ctypes.CDLL | None:
    """Return libcrypto_mb when usable on this CPU and not disabled, else None."""
    with _lock:
        if _state["forced"]:
            return None
        if not _state["tried"]:
            _state["lib"] = _try_load()
            _state["tried"] = True
        lib = _state["lib"]
        return lib if isinstance(lib, ctypes.CDLL) else None


def is_available() -> bool:
    return load() is not None


def force_portable(on: bool) -> None:
    """Make `load()` return None (True) or the real library again (False)."""
    with _lock:
        _state["forced"] = on
