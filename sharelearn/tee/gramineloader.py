"""The loader inside a Gramine-SGX enclave: `python -I -B gramineloader.py`, as `sgx.render_manifest` writes.

Gramine measures this file, the Python runtime and the bundle into MRENCLAVE; the manifest fixes
the bundle directory (`SML_ENCLAVE_BUNDLE`), so the untrusted host chooses nothing the enclave runs.
The loader reads the bundle's `enclave.json` entrypoint, calls it with a `HostedRuntime` to get
the handler table, and serves calls from the host over stdin / stdout, the only channel Gramine
gives an enclave to its host by default (untrusted bytes, length-prefixed codec frames). Python's
own stdout is redirected to stderr first, so no stray print can corrupt a frame.

Quotes come from `/dev/attestation` (`sgx.GramineRuntime`). The enclave has no internet, so the
collateral for its quotes is asked of the host, which fetches it from a PCCS or the PCCS-lite
proxy; the enclave returns quote and collateral together (`attestation.pack_evidence`).
Collateral is untrusted where it comes from: every verifier checks it under its own root.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.tee.attestation import pack_evidence
from sharelearn.tee.backend import EnclaveIdentity, SealPolicy
from sharelearn.tee.frames import FrameStream, PipeStream, recv_frame, send_frame
from sharelearn.tee.inside import load_handlers, serve_calls
from sharelearn.tee.process import BUNDLE_CONFIG
from sharelearn.tee.sgx import GramineRuntime

__all__ = ["HostedRuntime", "main"]


class HostedRuntime:
    """`EnclaveRuntime` of a Gramine enclave whose quotes travel with collateral from the host."""

    def __init__(self, inner: GramineRuntime, host: FrameStream) -> None:
        self._inner = inner
        self._host = host

    @property
    def identity(self) -> EnclaveIdentity:
        return self._inner.identity

    def quote(self, report_data: bytes) -> bytes:
        raw = self._inner.quote(report_data)
        send_frame(self._host, {"op": "collateral", "quote": raw})
        reply = recv_frame(self._host)
        collateral = reply.get("collateral")
        if reply["op"] != "collateral" or not isinstance(collateral, str):
            raise CryptoError(f"host gave no collateral for this enclave's quote: {reply.get('error')!r}")
        return pack_evidence(raw, collateral)

    def get_seal_key(self, policy: SealPolicy, key_id: bytes, isv_svn: int) -> bytes:
        return self._inner.get_seal_key(policy, key_id, isv_svn)

    def seal(self, plaintext: bytes, aad: bytes = b"", *, policy: SealPolicy = "mrenclave") -> bytes:
        return self._inner.seal(plaintext, aad, policy=policy)

    def unseal(self, blob: bytes, aad: bytes = b"") -> bytes:
        return self._inner.unseal(blob, aad)


def _entrypoint(bundle: Path) -> str:
    path = bundle / BUNDLE_CONFIG
    try:
        entry = json.loads(path.read_text()).get("entrypoint")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: unreadable enclave config: {exc}") from exc
    if not isinstance(entry, str) or ":" not in entry:
        raise ConfigError(f"{path}: key 'entrypoint' must be 'module:function'")
    return entry


def main() -> int:
    """Serve the bundle named by the manifest on stdin / stdout."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    bundle = os.environ.get("SML_ENCLAVE_BUNDLE")
    if not bundle:
        raise ConfigError("SML_ENCLAVE_BUNDLE is not set: the manifest names the bundle directory")
    channel = PipeStream(0, os.dup(1))
    os.dup2(2, 1)  # print() now reaches stderr, never the control channel
    sys.stdout = sys.stderr
    inner = GramineRuntime(Path(os.environ.get("SML_ATTESTATION_DIR", "/dev/attestation")))
    handlers = load_handlers(bundle, _entrypoint(Path(bundle)), HostedRuntime(inner, channel))
    serve_calls(channel, handlers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
