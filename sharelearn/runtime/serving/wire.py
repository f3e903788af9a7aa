"""The serving RPCs: msgpack documents (the wire codec, never pickle) over gRPC with mutual TLS.

One generic gRPC service per process, `sharelearn.Serving`, whose methods take and return one
codec-encoded dict. A server accepts a caller only if its certificate chains to the federation CA
and names one of the parties the server allows; a client checks that the server it reached is the
party it meant (the party name is the TLS target name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, DecodeError, ProtocolError, SharelearnError
from sharelearn.runtime.certs import PartyCredentials

__all__ = ["SERVICE", "RpcClient", "RpcFailed", "serve_rpc"]

log = logging.getLogger(__name__)
SERVICE = "sharelearn.Serving"
_LIMITS = codec.Limits(max_message_bytes=64 << 20, max_array_bytes=64 << 20)
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
Handler = Callable[[dict[str, Any], str], dict[str, Any]]


class RpcFailed(ProtocolError):
    """A serving call failed: `code` is the gRPC status name (UNAVAILABLE, DEADLINE_EXCEEDED, ...)."""

    def __init__(self, message: str, *, peer: str, code: str) -> None:
        super().__init__(message, peer=peer)
        self.code = code


def _method(name: str, fn: Handler, allowed: Collection[str], me: str) -> grpc.RpcMethodHandler:
    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        names = [n.decode() for n in context.auth_context().get("x509_common_name", [])]
        caller = next((n for n in names if n in allowed), None)
        if caller is None:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{me}: certificate {names} is not a party of this model"
            )
        assert caller is not None  # invariant: abort() raised otherwise
        try:
            doc = codec.decode(request, peer=caller, tag=name, limits=_LIMITS)
            if not isinstance(doc, dict):
                raise DecodeError(f"{name} request is not a map", peer=caller, tag=name)
            return codec.encode(fn(doc, caller))
        except SharelearnError as exc:
            log.info("%s: %s from %s refused: %s", me, name, caller, exc)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("unreachable")  # abort() raises

    return grpc.unary_unary_rpc_method_handler(handle)


def serve_rpc(
    creds: PartyCredentials,
    listen: str,
    handlers: Mapping[str, Handler],
    allowed: Collection[str],
    *,
    workers: int = 16,
) -> tuple[grpc.Server, int]:
    """Start the mTLS server; returns it and the port it listens on (0 in `listen` picks a free one)."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"serve-{creds.party}"), options=_OPTIONS
    )
    methods = {n: _method(n, fn, set(allowed), creds.party) for n, fn in handlers.items()}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, methods)])
    server_creds = grpc.ssl_server_credentials(
        [(creds.key_pem, creds.cert_pem)], root_certificates=creds.ca_pem, require_client_auth=True
    )
    port = server.add_secure_port(listen, server_creds)
    if port == 0:
        raise ConfigError(f"{creds.party}: cannot listen on {listen!r}")
    server.start()
    return server, port


class RpcClient:
    """Calls one serving process (`peer` at `address`) over mTLS."""

    def __init__(self, creds: PartyCredentials, peer: str, address: str) -> None:
        self.peer, self.address = peer, address
        channel_creds = grpc.ssl_channel_credentials(
            root_certificates=creds.ca_pem, private_key=creds.key_pem, certificate_chain=creds.cert_pem
        )
        options = [*_OPTIONS, ("grpc.ssl_target_name_override", peer)]
        self._channel = grpc.secure_channel(address, channel_creds, options=options)

    def call(self, method: str, doc: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        """One call; fails with RpcFailed naming the peer, its address and the gRPC status."""
        fn = self._channel.unary_unary(f"/{SERVICE}/{method}")
        try:
            reply = fn(codec.encode(dict(doc)), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            raise RpcFailed(
                f"{method} to {self.peer!r} at {self.address} failed ({code}): {detail}",
                peer=self.peer,
                code=code,
            ) from exc
        out = codec.decode(reply, peer=self.peer, tag=method, limits=_LIMITS)
        if not isinstance(out, dict):
            raise DecodeError(f"{method} reply is not a map", peer=self.peer, tag=method)
        return out

    def close(self) -> None:
        self._channel.close()
