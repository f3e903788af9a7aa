"""The simulation backend: an enclave is an isolated OS process running a measured bundle.

Build (`SimBackend.load`): read every file of the bundle directory (no symlinks, no special
files), hash them with the config of `enclave.json` into MRENCLAVE, and sign a sigstruct
(Ed25519) whose key hash is MRSIGNER. Launch: read the bundle *again into memory*, re-measure,
refuse any mismatch with the image (the EINIT analogue: a tampered bundle never runs), copy the
measured bytes into a private read-only directory and start `python -I -B -m
sharelearn.tee.simloader` on one control socket. Quotes (packed with the platform's simulated PCS
collateral, `SimPlatform.evidence`) and seal keys for that process come from the `SimPlatform`
using the identity *it* measured, never one the process claims.

Not security against the host: the host can read the process memory (TEE.md §2.4).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sharelearn.core.codec import decode, encode
from sharelearn.core.errors import AttestationError, ConfigError, CryptoError, ProtocolError, RequestRefused
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveIdentity, EnclaveImage
from sharelearn.tee.simplatform import SimPlatform

__all__ = [
    "BUNDLE_CONFIG",
    "EnclaveProcess",
    "FrameStream",
    "PipeStream",
    "SimBackend",
    "SimEnclave",
    "measure_bundle",
    "read_bundle",
    "recv_frame",
    "send_frame",
]

BUNDLE_CONFIG = "enclave.json"
MAX_BUNDLE_FILES = 4096
MAX_BUNDLE_BYTES = 256 << 20
MAX_FRAME = 64 << 20
_SIGSTRUCT_DOMAIN = b"SML-SIM-SIGSTRUCT-v1"


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


def _config(files: dict[str, bytes], bundle: Path) -> dict[str, Any]:
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


def measure_bundle(files: dict[str, bytes]) -> bytes:
    """MRENCLAVE analogue: SHA-256 over a canonical manifest of every file (path, size, hash).

    enclave.json is one of the files, so its config (entrypoint, ISVSVN, debug, ...) is measured.
    """
    manifest = {
        "fmt": "sml-sim-enclave-v1",
        "files": [[p, len(d), hashlib.sha256(d).hexdigest()] for p, d in sorted(files.items())],
    }
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"SML-SIM-MRENCLAVE-v1\0" + canonical).digest()


def _sigstruct_body(ident: EnclaveIdentity) -> bytes:
    return (
        _SIGSTRUCT_DOMAIN
        + ident.mrenclave
        + struct.pack("<HHQ", ident.isv_prod_id, ident.isv_svn, ident.attributes_flags)
    )


class FrameStream(Protocol):
    """A byte stream the control frames travel on: a socket, or `PipeStream` (Gramine's stdio)."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, n: int, /) -> bytes: ...


class PipeStream:
    """`FrameStream` over a pair of pipe file descriptors (read end, write end)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    def sendall(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view) :]

    def recv(self, n: int, /) -> bytes:
        return os.read(self.read_fd, n)


def send_frame(sock: FrameStream, msg: dict[str, Wire]) -> None:
    """Send one length-prefixed codec message over the control socket."""
    payload = encode(msg)
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _recv_exact(sock: FrameStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError("enclave control socket closed", peer="enclave")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: FrameStream) -> dict[str, Wire]:
    """Receive one length-prefixed codec message; refuse oversized frames and non-maps."""
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise ProtocolError(f"enclave control frame of {size} bytes exceeds {MAX_FRAME}", peer="enclave")
    msg = decode(_recv_exact(sock, size), peer="enclave", tag="control")
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ProtocolError("enclave control frame is not a message map", peer="enclave")
    return msg


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


class SimEnclave(EnclaveProcess):
    """A running simulated enclave (host view). Use as a context manager; `close` reaps it."""

    def __init__(self, image: EnclaveImage, platform: SimPlatform, files: dict[str, bytes]) -> None:
        self._identity = image.identity
        self._platform = platform
        self._dir = Path(tempfile.mkdtemp(prefix="sml-enclave-"))
        for rel, data in files.items():
            target = self._dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o400)
        parent, child = socket.socketpair()
        self._sock = self._stream = parent
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, "-I", "-B", "-m", "sharelearn.tee.simloader", str(child.fileno())]
        self._proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), env=env, cwd=self._dir, close_fds=True)
        child.close()
        for sub in sorted(self._dir.rglob("*"), reverse=True):
            if sub.is_dir():
                sub.chmod(0o500)
        self._dir.chmod(0o500)
        send_frame(
            parent,
            {
                "op": "init",
                "dir": str(self._dir),
                "entrypoint": image.entrypoint,
                "identity": _identity_wire(image.identity),
            },
        )

    def _set_timeout(self, seconds: float) -> None:
        self._sock.settimeout(seconds)

    def _serve_host(self, msg: dict[str, Wire]) -> dict[str, Wire]:
        """Answer an enclave's platform request with the identity the platform measured."""
        try:
            report_data = msg.get("report_data")
            if msg["op"] == "quote" and isinstance(report_data, bytes):
                # The enclave gets evidence: its quote plus the platform's collateral.
                return {"op": "quote", "quote": self._platform.evidence(self._identity, report_data)}
            key_id, svn, policy = msg.get("key_id"), msg.get("isv_svn"), msg.get("policy")
            if (
                msg["op"] == "seal_key"
                and isinstance(key_id, bytes)
                and isinstance(svn, int)
                and policy in ("mrenclave", "mrsigner")
            ):
                key = self._platform.seal_key(
                    self._identity, "mrenclave" if policy == "mrenclave" else "mrsigner", key_id, svn
                )
                return {"op": "seal_key", "key": key}
        except CryptoError as exc:
            return {"op": "error", "error": str(exc)}
        return {"op": "error", "error": f"malformed platform request {msg['op']!r}"}

    def close(self) -> None:
        """Ask the enclave to exit, kill it if it does not, and remove its private directory."""
        try:
            if self._proc.poll() is None:
                self._sock.settimeout(2.0)
                send_frame(self._sock, {"op": "exit"})
                self._proc.wait(timeout=5.0)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait(timeout=5.0)
        finally:
            self._sock.close()
            for sub in [self._dir, *self._dir.rglob("*")]:
                if sub.is_dir():
                    sub.chmod(0o700)
            shutil.rmtree(self._dir, ignore_errors=True)


def _identity_wire(ident: EnclaveIdentity) -> dict[str, Wire]:
    return {
        "mrenclave": ident.mrenclave,
        "mrsigner": ident.mrsigner,
        "isv_prod_id": ident.isv_prod_id,
        "isv_svn": ident.isv_svn,
        "debug": ident.debug,
    }


class SimBackend:
    """`EnclaveBackend` for the simulation: bundles are signed by `signer`, run on `platform`."""

    kind = "sim"

    def __init__(self, platform: SimPlatform, signer: Ed25519PrivateKey) -> None:
        self.platform = platform
        self._signer = signer
        self._signer_pub = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def load(self, bundle: Path) -> EnclaveImage:
        """Measure and sign a bundle (build + sign); the identity is what policies pin."""
        files = read_bundle(bundle)
        cfg = _config(files, bundle)
        ident = EnclaveIdentity(
            mrenclave=measure_bundle(files),
            mrsigner=hashlib.sha256(self._signer_pub).digest(),
            isv_prod_id=int(cfg.get("isv_prod_id", 0)),
            isv_svn=int(cfg.get("isv_svn", 0)),
            debug=bool(cfg.get("debug", False)),
        )
        sigstruct = self._signer_pub + self._signer.sign(_sigstruct_body(ident))
        return EnclaveImage("sim", bundle, ident, str(cfg["entrypoint"]), sigstruct)

    def launch(self, image: EnclaveImage) -> SimEnclave:
        """Re-measure the bundle in memory and start it only if it is exactly the signed image.

        Raises:
            AttestationError: the bundle changed since it was signed (measurement mismatch), or
                the sigstruct does not verify.
        """
        files = read_bundle(image.bundle)
        found = measure_bundle(files)
        if found != image.identity.mrenclave:
            raise AttestationError(
                f"enclave bundle {image.bundle} refused at launch: measurement {found.hex()[:16]}… != "
                f"signed MRENCLAVE {image.identity.mrenclave.hex()[:16]}… (tampered bundle)"
            )
        signer_pub, signature = image.sigstruct[:32], image.sigstruct[32:]
        try:
            Ed25519PublicKey.from_public_bytes(signer_pub).verify(signature, _sigstruct_body(image.identity))
        except (InvalidSignature, ValueError) as exc:
            raise AttestationError(f"enclave bundle {image.bundle}: sigstruct does not verify") from exc
        if hashlib.sha256(signer_pub).digest() != image.identity.mrsigner:
            raise AttestationError(f"enclave bundle {image.bundle}: sigstruct signer is not MRSIGNER")
        return SimEnclave(image, self.platform, files)
