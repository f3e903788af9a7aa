"""The Gramine-SGX backend path (real hardware; nothing here can be exercised without SGX).

Host side: `render_manifest` writes a Gramine manifest for a Python bundle (TEE.md §2.5);
`GramineSgxBackend.load` runs `gramine-manifest`, `gramine-sgx-sign` and
`gramine-sgx-sigstruct-view` to learn the MRENCLAVE/MRSIGNER that policies pin.
Enclave side: `GramineRuntime` obtains quotes by writing `/dev/attestation/user_report_data` and
reading `/dev/attestation/quote`, and seal keys by reading `/dev/attestation/keys/_sgx_mrenclave`
(always through a KDF, never used directly).

Launch: `GramineSgxBackend.launch` starts `gramine-sgx app` in the work directory; inside,
`gramineloader` serves calls on the enclave's stdin / stdout (the same frames as the simulation
backend's control socket). When a handler asks for a quote, the host answers the enclave's
request for collateral from the PCCS it was given (`pccs_url`, e.g. `sharelearn tee pccs`), so
enclave hosts need no internet. The control protocol runs in tests with the loader as a normal
process and a stand-in attestation directory; `gramine-sgx` itself only on SGX hardware, whose
tests skip on machines without `/dev/sgx_enclave`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from sharelearn.core.errors import AttestationError, ConfigError, CryptoError, ProtocolError
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveHandle, EnclaveIdentity, EnclaveImage, SealPolicy
from sharelearn.tee.frames import PipeStream, send_frame
from sharelearn.tee.pccs import fetch_collateral
from sharelearn.tee.process import EnclaveProcess
from sharelearn.tee.quote import SgxReportBody, parse_quote
from sharelearn.tee.sealing import derive_key, seal_with, unseal_with

__all__ = [
    "LOADER_SCRIPT",
    "SCRATCH_MOUNT",
    "SGX_DEVICE",
    "GramineEnclave",
    "GramineRuntime",
    "GramineSgxBackend",
    "render_manifest",
    "sgx_available",
]

SGX_DEVICE = Path("/dev/sgx_enclave")
_TOOLS = ("gramine-manifest", "gramine-sgx-sign", "gramine-sgx-sigstruct-view", "gramine-sgx")
SCRATCH_MOUNT = "/scratch"  # inside the enclave; encrypted by Gramine (render_manifest)
LOADER_SCRIPT = str(Path(__file__).with_name("gramineloader.py"))  # the manifest's entry script


def sgx_available() -> bool:
    """True when this machine has an SGX device and the Gramine tools."""
    return SGX_DEVICE.exists() and all(shutil.which(t) for t in _TOOLS)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def render_manifest(
    *,
    python: str,
    entry_script: str,
    bundle_dir: str,
    trusted_paths: Sequence[str],
    isv_prod_id: int,
    isv_svn: int,
    enclave_size: str = "1G",
    max_threads: int = 8,
    debug: bool = False,
) -> str:
    """Render a Gramine manifest (TOML) for a Python bundle with DCAP attestation.

    Every trusted path (bundle, stdlib, site-packages) is hashed into MRENCLAVE by
    `gramine-sgx-sign`, so changing any byte changes the measurement.
    """
    if not (0 <= isv_prod_id <= 0xFFFF and 0 <= isv_svn <= 0xFFFF):
        raise ConfigError(f"render_manifest: isv_prod_id/isv_svn out of range ({isv_prod_id}, {isv_svn})")
    trusted = ",\n  ".join(f'"file:{p}"' for p in (python, bundle_dir, *trusted_paths))
    return "\n".join(
        [
            f"libos.entrypoint = {_toml_str(python)}",
            f'loader.argv = [{_toml_str(python)}, "-I", "-B", {_toml_str(entry_script)}]',
            'loader.env.OMP_NUM_THREADS = "1"',
            f"loader.env.SML_ENCLAVE_BUNDLE = {_toml_str(bundle_dir)}",
            # scratch files (XGBoost's external-memory pages) on a mount Gramine encrypts with a
            # key bound to MRENCLAVE: the host sees only ciphertext
            f"loader.env.SML_ENCLAVE_SCRATCH = {_toml_str(SCRATCH_MOUNT)}",
            f'fs.mounts = [{{ type = "encrypted", path = {_toml_str(SCRATCH_MOUNT)}, '
            'uri = "file:scratch", key_name = "_sgx_mrenclave" }]',
            'loader.env.OPENBLAS_NUM_THREADS = "1"',
            'sgx.remote_attestation = "dcap"',
            f"sgx.debug = {'true' if debug else 'false'}",
            f"sgx.isvprodid = {isv_prod_id}",
            f"sgx.isvsvn = {isv_svn}",
            f"sgx.enclave_size = {_toml_str(enclave_size)}",
            f"sgx.max_threads = {max_threads}",
            f"sgx.trusted_files = [\n  {trusted},\n]",
            "",
        ]
    )


class GramineRuntime:
    """`EnclaveRuntime` inside a Gramine-SGX enclave, through the `/dev/attestation` pseudo-files."""

    def __init__(self, attestation_dir: Path = Path("/dev/attestation")) -> None:
        self._dir = attestation_dir
        self._identity: EnclaveIdentity | None = None

    def quote(self, report_data: bytes) -> bytes:
        if len(report_data) != 64:
            raise CryptoError(f"report_data must be 64 bytes, got {len(report_data)}")
        (self._dir / "user_report_data").write_bytes(report_data)
        return (self._dir / "quote").read_bytes()

    @property
    def identity(self) -> EnclaveIdentity:
        if self._identity is None:
            body = parse_quote(self.quote(bytes(64))).body
            if not isinstance(body, SgxReportBody):
                raise CryptoError("GramineRuntime: /dev/attestation/quote is not an SGX quote")
            self._identity = EnclaveIdentity(
                body.mrenclave, body.mrsigner, body.isv_prod_id, body.isv_svn, body.debug
            )
        return self._identity

    def get_seal_key(self, policy: SealPolicy, key_id: bytes, isv_svn: int) -> bytes:
        # Gramine exposes only the current-SVN keys; older-SVN derivation is not available.
        if isv_svn != self.identity.isv_svn:
            raise CryptoError(
                f"Gramine seal keys exist only for the own ISVSVN {self.identity.isv_svn}, not {isv_svn}"
            )
        name = {"mrenclave": "_sgx_mrenclave", "mrsigner": "_sgx_mrsigner"}.get(policy)
        if name is None:
            raise CryptoError(f"unknown seal policy {policy!r}")
        ikm = (self._dir / "keys" / name).read_bytes()
        return derive_key(
            ikm, salt=key_id, info=b"SML-SGX-SEAL-v1" + policy.encode() + isv_svn.to_bytes(2, "little")
        )

    def seal(self, plaintext: bytes, aad: bytes = b"", *, policy: SealPolicy = "mrenclave") -> bytes:
        return seal_with(self.get_seal_key, plaintext, aad, policy=policy, isv_svn=self.identity.isv_svn)

    def unseal(self, blob: bytes, aad: bytes = b"") -> bytes:
        return unseal_with(self.get_seal_key, blob, aad)


class GramineSgxBackend:
    """`EnclaveBackend` for Gramine on SGX hardware, signing with an RSA-3072 key file."""

    kind = "gramine-sgx"

    def __init__(
        self,
        sign_key: Path,
        work_dir: Path,
        *,
        pccs_url: str | None = None,
        command: Sequence[str] = ("gramine-sgx", "app"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`pccs_url` serves the collateral of the enclaves' quotes; `command` and `env` replace
        `gramine-sgx app` and its environment (tests run the loader as a normal process)."""
        self.sign_key = sign_key
        self.work_dir = work_dir
        self.pccs_url = pccs_url
        self.command = tuple(command)
        self.env = dict(env or {})

    def _run(self, *cmd: str) -> str:
        if shutil.which(cmd[0]) is None:
            raise ConfigError(f"{cmd[0]} not found: the Gramine-SGX backend needs Gramine installed")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise ConfigError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return done.stdout

    def load(self, bundle: Path) -> EnclaveImage:
        """Sign `bundle`/app.manifest.template with Gramine and read back its identity."""
        template, manifest = bundle / "app.manifest.template", self.work_dir / "app.manifest"
        self._run("gramine-manifest", str(template), str(manifest))
        self._run(
            "gramine-sgx-sign",
            "--key",
            str(self.sign_key),
            "--manifest",
            str(manifest),
            "--output",
            str(manifest) + ".sgx",
        )
        sig = self.work_dir / "app.sig"
        view = json.loads(self._run("gramine-sgx-sigstruct-view", "--output-format", "json", str(sig)))
        ident = EnclaveIdentity(
            bytes.fromhex(view["mr_enclave"]),
            bytes.fromhex(view["mr_signer"]),
            int(view["isv_prod_id"]),
            int(view["isv_svn"]),
            bool(view.get("debug_enclave")),
        )
        return EnclaveImage(self.kind, bundle, ident, "app", sig.read_bytes())

    def launch(self, image: EnclaveImage) -> EnclaveHandle:
        """Start `gramine-sgx app` for a loaded image and return its handle."""
        if image.kind != self.kind:
            raise ConfigError(f"{self.kind} backend cannot launch a {image.kind} image")
        if shutil.which(self.command[0]) is None:
            raise ConfigError(f"{self.command[0]} not found: launching needs Gramine on an SGX machine")
        return GramineEnclave(image.identity, self.command, self.work_dir, self.pccs_url, self.env)


class GramineEnclave(EnclaveProcess):
    """A running Gramine-SGX enclave (host view): calls over its stdin / stdout, collateral on request."""

    def __init__(
        self,
        identity: EnclaveIdentity,
        command: Sequence[str],
        work_dir: Path,
        pccs_url: str | None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._identity, self._pccs = identity, pccs_url
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._proc = subprocess.Popen(
            list(command),
            cwd=work_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=base | dict(env or {}),
        )
        if self._proc.stdin is None or self._proc.stdout is None:
            raise ProtocolError("gramine-sgx started without pipes", peer="enclave")
        self._stream = PipeStream(self._proc.stdout.fileno(), self._proc.stdin.fileno())

    def _serve_host(self, msg: dict[str, Wire]) -> dict[str, Wire]:
        """The enclave asks for its quote's collateral (it has no network); fetch it from the PCCS."""
        quote = msg.get("quote")
        if msg["op"] != "collateral":
            return {"op": "error", "error": f"unknown host request {msg['op']!r}"}
        if self._pccs is None or not isinstance(quote, bytes):
            return {"op": "error", "error": "this host has no PCCS to fetch collateral from"}
        try:
            return {"op": "collateral", "collateral": fetch_collateral(self._pccs, quote)}
        except (AttestationError, ConfigError) as exc:
            return {"op": "error", "error": str(exc)}

    def close(self) -> None:
        """Ask the enclave to exit; kill it if it does not."""
        try:
            if self._proc.poll() is None:
                send_frame(self._stream, {"op": "exit"})
                self._proc.wait(timeout=10.0)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait(timeout=5.0)
        finally:
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    pipe.close()
