"""The simulation backend: an enclave is an isolated OS process running a measured bundle.

Build (`SimBackend.load`): read every file of the bundle directory (no symlinks, no special
files), hash them with the config of `enclave.json` into MRENCLAVE, and sign a sigstruct
(Ed25519) whose key hash is MRSIGNER. Launch: read the bundle *again into memory*, re-measure,
refuse any mismatch with the image (the EINIT analogue: a tampered bundle never runs), copy the
measured bytes into a private read-only directory and start `python -I -B -m
sharelearn.tee.sim.loader` on one control socket. Quotes (packed with the platform's simulated PCS
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
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sharelearn.core.errors import AttestationError, CryptoError
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveIdentity, EnclaveImage
from sharelearn.tee.frames import send_frame
from sharelearn.tee.process import EnclaveProcess, config_of, read_bundle
from sharelearn.tee.sim.platform import SimPlatform

__all__ = ["SimBackend", "SimEnclave", "measure_bundle"]

_SIGSTRUCT_DOMAIN = b"SML-SIM-SIGSTRUCT-v1"


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
        cmd = [sys.executable, "-I", "-B", "-m", "sharelearn.tee.sim.loader", str(child.fileno())]
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
        cfg = config_of(files, bundle)
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
