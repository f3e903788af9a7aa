"""Loopback TCP endpoints of the TEE cluster's actors: one frame per request, one per reply.

Enclave hosts and the cluster manager serve `frames` messages over fresh loopback connections;
`call_endpoint` is the one client call, `control_call` the same for a signed control command
(`control`). A handler's refusal travels back as an error reply naming its type.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Sequence

from sharelearn.core.errors import (
    ProtocolError,
    RequestRefused,
    SharelearnError,
)
from sharelearn.core.types import Wire
from sharelearn.tee.control import ControlSigner, ControlVerifier
from sharelearn.tee.frames import recv_frame, send_frame

__all__ = ["call_endpoint", "control_call", "make_admin", "serve_endpoint"]


def call_endpoint(endpoint: str, msg: dict[str, Wire], *, timeout: float = 60.0) -> Wire:
    """One request/response over a fresh loopback TCP connection (codec frames)."""
    host, _, port = endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        send_frame(sock, msg)
        reply = recv_frame(sock)
    if reply["op"] == "error":
        error = RequestRefused if reply.get("refused") is True else ProtocolError
        raise error(f"{endpoint}: {reply.get('error')!s}", peer=endpoint, tag=str(msg.get("op")))
    return reply.get("value")


def control_call(
    endpoint: str, signer: ControlSigner, msg: dict[str, Wire], *, timeout: float = 60.0
) -> Wire:
    """A control-plane command (launch, kill, upgrade, set_weights, add_host) signed for `endpoint`."""
    return call_endpoint(endpoint, signer.sign(endpoint, msg), timeout=timeout)


def make_admin(admin: Sequence[str] | None) -> tuple[ControlSigner | None, ControlVerifier]:
    """The verifier of control commands; with no admin keys given, a fresh admin key held here."""
    if admin is not None:
        return None, ControlVerifier(admin)
    signer = ControlSigner()
    return signer, ControlVerifier([signer.public])


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_endpoint(handler: Callable[[dict[str, Wire]], Wire], port: int = 0) -> tuple[_Server, str]:
    class _H(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                msg = recv_frame(self.request)
            except (SharelearnError, OSError):
                return
            try:
                reply: dict[str, Wire] = {"op": "result", "value": handler(msg)}
            except RequestRefused as exc:  # relayed from an enclave that is alive and answered
                reply = {"op": "error", "error": f"{type(exc).__name__}: {exc}", "refused": True}
            except (SharelearnError, ValueError, TypeError, KeyError) as exc:
                reply = {"op": "error", "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):
                send_frame(self.request, reply)

    server = _Server(("127.0.0.1", port), _H)
    threading.Thread(target=server.serve_forever, name="tee-endpoint", daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"
