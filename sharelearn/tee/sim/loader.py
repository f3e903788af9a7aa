"""The loader that runs inside a simulated enclave process (`python -I -B -m sharelearn.tee.sim.loader FD`).

It receives its measured directory, entrypoint and identity from the launcher, disables core
dumps, imports `module:function` from the bundle, calls it with a `SimRuntime` to get the
handler table, then serves `call` requests until told to exit. Handlers see only the runtime and
their argument; quotes and seal keys are requested from the platform over the control socket.
"""

from __future__ import annotations

import resource
import socket
import sys
from collections.abc import Mapping

from sharelearn.core.errors import CryptoError, ProtocolError
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveIdentity, SealPolicy
from sharelearn.tee.frames import recv_frame, send_frame
from sharelearn.tee.inside import Handler, load_handlers, serve_calls
from sharelearn.tee.sealing import seal_with, unseal_with

__all__ = ["SimRuntime", "load_handlers", "main", "serve_calls"]


class SimRuntime:
    """`EnclaveRuntime` of a simulated enclave: talks to the platform over the control socket."""

    def __init__(self, sock: socket.socket, identity: EnclaveIdentity) -> None:
        self._sock = sock
        self._identity = identity

    @property
    def identity(self) -> EnclaveIdentity:
        return self._identity

    def _ask(self, request: dict[str, Wire], field: str) -> bytes:
        send_frame(self._sock, request)
        reply = recv_frame(self._sock)
        value = reply.get(field)
        if reply["op"] != request["op"] or not isinstance(value, bytes):
            raise CryptoError(f"platform refused {request['op']!r}: {reply.get('error')!r}")
        return value

    def quote(self, report_data: bytes) -> bytes:
        return self._ask({"op": "quote", "report_data": report_data}, "quote")

    def get_seal_key(self, policy: SealPolicy, key_id: bytes, isv_svn: int) -> bytes:
        return self._ask({"op": "seal_key", "policy": policy, "key_id": key_id, "isv_svn": isv_svn}, "key")

    def seal(self, plaintext: bytes, aad: bytes = b"", *, policy: SealPolicy = "mrenclave") -> bytes:
        return seal_with(self.get_seal_key, plaintext, aad, policy=policy, isv_svn=self._identity.isv_svn)

    def unseal(self, blob: bytes, aad: bytes = b"") -> bytes:
        return unseal_with(self.get_seal_key, blob, aad)


def _identity(raw: Wire) -> EnclaveIdentity:
    if not isinstance(raw, dict):
        raise ProtocolError("init: identity missing", peer="platform")
    mre, mrs, prod, svn = (
        raw.get("mrenclave"),
        raw.get("mrsigner"),
        raw.get("isv_prod_id"),
        raw.get("isv_svn"),
    )
    if not (
        isinstance(mre, bytes) and isinstance(mrs, bytes) and isinstance(prod, int) and isinstance(svn, int)
    ):
        raise ProtocolError("init: malformed identity", peer="platform")
    return EnclaveIdentity(mre, mrs, prod, svn, bool(raw.get("debug")))


def _load(init: Mapping[str, Wire], runtime: SimRuntime) -> Mapping[str, Handler]:
    directory, entry = init.get("dir"), init.get("entrypoint")
    if not isinstance(directory, str) or not isinstance(entry, str):
        raise ProtocolError("init: dir and entrypoint required", peer="platform")
    return load_handlers(directory, entry, runtime)


def main(argv: list[str]) -> int:
    """Run one simulated enclave on the control socket whose fd is argv[1]."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # hygiene: no core dumps of enclave memory
    sock = socket.socket(fileno=int(argv[1]))
    init = recv_frame(sock)
    runtime = SimRuntime(sock, _identity(init.get("identity")))
    serve_calls(sock, _load(init, runtime))
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
