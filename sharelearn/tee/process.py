"""Enclave bundles and the host's view of an enclave process, shared by every backend.

A bundle is a directory of regular files with an `enclave.json` config; `read_bundle` reads it
into memory (no symlinks or special files, bounded size). `EnclaveProcess` drives one enclave
process over control frames (`frames`); the simulated (`sim`) and Gramine-SGX (`sgx`) backends
subclass it.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any, Self

from sharelearn.core.errors import ConfigError, ProtocolError, RequestRefused
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.frames import FrameStream, recv_frame, send_frame

__all__ = [
    "BUNDLE_CONFIG",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_FILES",
    "EnclaveProcess",
    "config_of",
    "read_bundle",
]

BUNDLE_CONFIG = "enclave.json"
MAX_BUNDLE_FILES = 4096
MAX_BUNDLE_BYTES = 256 << 20


def read_bundle(bundle: Path) -> dict[str, bytes]:
    """Read a bundle directory into memory: {posix relative path: bytes}, sorted, checked."""
    if not bundle.is_dir():
        raise ConfigError(f"enclave bundle {bundle} is not a directory")
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(bundle.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ConfigError(f"enclave bundle {bundle}: {path} is not a regular file (symlink or special)")
        data = path.read_bytes()
        total += len(data)
        if len(files) >= MAX_BUNDLE_FILES or total > MAX_BUNDLE_BYTES:
            raise ConfigError(
                f"enclave bundle {bundle} exceeds {MAX_BUNDLE_FILES} files / {MAX_BUNDLE_BYTES} bytes"
            )
        files[path.relative_to(bundle).as_posix()] = data
    if BUNDLE_CONFIG not in files:
        raise ConfigError(f"enclave bundle {bundle} has no {BUNDLE_CONFIG}")
    return files


def config_of(files: dict[str, bytes], bundle: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(files[BUNDLE_CONFIG])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{bundle / BUNDLE_CONFIG}: invalid JSON: {exc}") from exc
    if (
        not isinstance(cfg, dict)
        or not isinstance(cfg.get("entrypoint"), str)
        or ":" not in cfg["entrypoint"]
    ):
        raise ConfigError(f"{bundle / BUNDLE_CONFIG}: key 'entrypoint' must be 'module:function'")
    for key in ("isv_prod_id", "isv_svn"):
        if not isinstance(cfg.get(key, 0), int) or not 0 <= cfg.get(key, 0) <= 0xFFFF:
            raise ConfigError(f"{bundle / BUNDLE_CONFIG}: key {key!r} must be an integer in 0..65535")
    if not isinstance(cfg.get("debug", False), bool):
        raise ConfigError(f"{bundle / BUNDLE_CONFIG}: key 'debug' must be true or false")
    return cfg


class EnclaveProcess:
    """Host view of an enclave process driven by control frames (simulated or Gramine-SGX).

    Subclasses set `_identity`, `_proc` and `_stream`, answer the enclave's requests to its host in
    `_serve_host` and reap the process in `close`. Use as a context manager.
    """

    _identity: EnclaveIdentity
    _proc: subprocess.Popen[bytes]
    _stream: FrameStream

    @property
    def identity(self) -> EnclaveIdentity:
        return self._identity

    @property
    def pid(self) -> int:
        return self._proc.pid

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def _serve_host(self, msg: dict[str, Wire]) -> dict[str, Wire]:
        raise NotImplementedError

    def _set_timeout(self, seconds: float) -> None:
        """Bound each read of the control stream, where the stream supports it."""

    def call(self, method: str, arg: Wire = None, *, timeout: float = 30.0) -> Wire:
        """Invoke handler `method` inside the enclave; serve its requests to the host meanwhile."""
        if self._proc.poll() is not None:
            raise ProtocolError(
                f"enclave {self._identity} (pid {self.pid}) has exited", peer="enclave", tag=method
            )
        self._set_timeout(timeout)
        try:
            send_frame(self._stream, {"op": "call", "method": method, "arg": arg})
            while True:
                msg = recv_frame(self._stream)
                if msg["op"] == "result":
                    return msg.get("value")
                if msg["op"] == "error":  # the enclave is alive and answered: a refusal
                    failure = f"enclave {self._identity}: {method} failed: {msg.get('error')!r}"
                    raise RequestRefused(failure, peer="enclave", tag=method)
                send_frame(self._stream, self._serve_host(msg))
        except (TimeoutError, OSError) as exc:
            raise ProtocolError(
                f"enclave {self._identity}: {method}: {exc}", peer="enclave", tag=method
            ) from exc
