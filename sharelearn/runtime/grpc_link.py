"""The Link over gRPC with mutual TLS: one server per party, one channel per peer.

Every party runs a gRPC server on its own port and opens a channel to each peer. A message is
one unary call `/sharelearn.Link/Deliver` whose body is the codec's bytes (no protobuf, no
pickle) and whose metadata carries the sender and the tag. Both directions are authenticated:

* the server requires a client certificate signed by the job's CA, and accepts a message only
  if that certificate's common name is a party of the job *and* the claimed sender;
* the client checks that the server's certificate names the peer it meant to reach (the party
  name is the TLS target name).
* both ends check the federation's revocation list (`revoked`: certificate serials in lower-case
  hex, as the coordinator's `/api/v1/crl` serves them): the server refuses every call whose client
  certificate is revoked, and the client, before it opens the channel to a peer, reads the
  certificate the peer's server presents and refuses to send to it if that is revoked. (The client
  check reads the certificate on a separate TLS connection just before the gRPC channel opens; the
  chain itself is verified by gRPC.)

Sends are synchronous (they return once the bytes sit in the peer's inbox), which keeps messages
of one tag in order and gives natural back-pressure.

Each peer is bounded by the receiver's `Limits` (see `Inbox`): the message that takes a peer past
its inbox quota is answered RESOURCE_EXHAUSTED, its queued messages are dropped, and every later
call from it is refused with RESOURCE_EXHAUSTED before its body is read, so a flooding peer cannot
grow the receiver's memory past the quota.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import DEFAULT_LIMITS, Limits
from sharelearn.core.errors import ConfigError, ProtocolError
from sharelearn.core.link import DEFAULT_TIMEOUT_S, BaseLink, Inbox, InboxQuotaExceeded
from sharelearn.core.types import PartyId
from sharelearn.runtime.certs import PartyCredentials

__all__ = ["GrpcLink"]

log = logging.getLogger(__name__)

_METHOD = "/sharelearn.Link/Deliver"
_SRC = "sl-src"
_TAG = "sl-tag-bin"


def _options(limits: Limits) -> list[tuple[str, Any]]:
    cap = min(limits.max_message_bytes + 4096, 2**31 - 1)
    return [("grpc.max_send_message_length", cap), ("grpc.max_receive_message_length", cap)]


def _serial_and_name(cert: x509.Certificate) -> tuple[str, str]:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return format(cert.serial_number, "x"), str(names[0].value) if names else "?"


def _presented_certificate(address: str, timeout: float) -> x509.Certificate:
    """The certificate the TLS server at `address` presents (not verified here: gRPC does that)."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError(f"{address}: presented no certificate")
    return x509.load_der_x509_certificate(der)


class _RefuseOverQuota(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse a peer that went over its inbox quota before its message body is read.

    The check runs on the call's metadata; the handler returned for a refused peer aborts without
    reading the request, so a flooding peer's bytes stop at gRPC's flow-control window.
    """

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        src = dict(details.invocation_metadata or ()).get(_SRC)
        reason = self._inbox.refusal(src) if isinstance(src, str) else None
        if reason is None:
            return continuation(details)

        def refuse(_requests: Any, context: grpc.ServicerContext) -> bytes:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
            return b""  # not reached: abort() raises

        return grpc.stream_unary_rpc_method_handler(refuse)


class GrpcLink(BaseLink):
    """One party's end of a job's mesh of mutually authenticated gRPC connections."""

    def __init__(
        self,
        creds: PartyCredentials,
        peers: Iterable[PartyId],
        *,
        listen: str = "127.0.0.1:0",
        timeout: float = DEFAULT_TIMEOUT_S,
        limits: Limits = DEFAULT_LIMITS,
        audit: WireAudit | None = None,
        revoked: Collection[str] = (),
    ) -> None:
        peer_list = [p for p in peers if p != creds.party]
        super().__init__(
            creds.party, peer_list, Inbox(creds.party, audit, limits), timeout=timeout, limits=limits
        )
        self._creds = creds
        self._revoked = frozenset(s.lower() for s in revoked)
        self._addresses: dict[PartyId, str] = {}
        self._calls: dict[PartyId, Any] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()
        self._server = grpc.server(
            ThreadPoolExecutor(
                max_workers=max(4, 2 * len(peer_list)), thread_name_prefix=f"grpc-{creds.party}"
            ),
            options=_options(limits),
            interceptors=[_RefuseOverQuota(self.inbox)],
        )
        handler = grpc.unary_unary_rpc_method_handler(self._deliver)
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("sharelearn.Link", {"Deliver": handler})]
        )
        server_creds = grpc.ssl_server_credentials(
            [(creds.key_pem, creds.cert_pem)], root_certificates=creds.ca_pem, require_client_auth=True
        )
        self.port = self._server.add_secure_port(listen, server_creds)
        if self.port == 0:
            raise ConfigError(f"{creds.party}: cannot listen on {listen!r}")
        self._server.start()

    def connect(self, addresses: Mapping[PartyId, str]) -> None:
        """Set each peer's "host:port"; channels open lazily on the first send."""
        missing = [p for p in self.peers if p not in addresses]
        if missing:
            raise ConfigError(f"{self.me}: no address for peer(s) {missing}")
        with self._lock:
            self._addresses.update({p: addresses[p] for p in self.peers})

    def _call(self, peer: PartyId) -> Any:
        with self._lock:
            call = self._calls.get(peer)
            if call is None:
                if peer not in self._addresses:
                    raise ProtocolError(f"{self.me}: address of peer {peer!r} is unknown", peer=peer)
                if self._revoked:
                    self._check_peer_not_revoked(peer)
                channel_creds = grpc.ssl_channel_credentials(
                    root_certificates=self._creds.ca_pem,
                    private_key=self._creds.key_pem,
                    certificate_chain=self._creds.cert_pem,
                )
                options = [*_options(self.limits), ("grpc.ssl_target_name_override", peer)]
                channel = grpc.secure_channel(self._addresses[peer], channel_creds, options=options)
                self._channels.append(channel)
                call = channel.unary_unary(_METHOD)
                self._calls[peer] = call
            return call

    def _check_peer_not_revoked(self, peer: PartyId) -> None:
        """Refuse to open a channel to a peer whose server presents a revoked certificate."""
        address = self._addresses[peer]
        try:
            cert = _presented_certificate(address, min(self.timeout, 10.0))
        except (OSError, ValueError) as exc:
            raise ProtocolError(
                f"{self.me}: cannot read the certificate of peer {peer!r} at {address} "
                f"to check it against the revocation list: {exc}",
                peer=peer,
            ) from exc
        serial, cn = _serial_and_name(cert)
        if serial in self._revoked:
            raise ProtocolError(
                f"{self.me}: peer {peer!r} at {address} presents certificate of {cn!r} "
                f"with serial {serial}, which is revoked; refusing to send to it",
                peer=peer,
            )

    def _revoked_caller(self, context: grpc.ServicerContext) -> str | None:
        """The refusal message when the caller's client certificate is revoked, else None."""
        if not self._revoked:
            return None
        for pem in context.auth_context().get("x509_pem_cert", []):
            serial, cn = _serial_and_name(x509.load_pem_x509_certificate(pem))
            if serial in self._revoked:
                return f"certificate of {cn!r} (serial {serial}) is revoked"
        return None

    def _transmit(self, peer: PartyId, tag: str, payload: bytes) -> None:
        metadata = ((_SRC, self.me), (_TAG, tag.encode()))
        try:
            self._call(peer)(payload, metadata=metadata, timeout=self.timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                detail += (
                    f"; no mutually authenticated connection to {peer!r} at {self._addresses.get(peer)}"
                    " (is it running, and is its certificate from this job's CA?)"
                )
            raise ProtocolError(
                f"{self.me}: sending {tag!r} to {peer!r} failed ({code}): {detail}", peer=peer, tag=tag
            ) from exc

    def _deliver(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        names = [n.decode() for n in context.auth_context().get("x509_common_name", [])]
        metadata = dict(context.invocation_metadata())
        src = metadata.get(_SRC)
        tag = metadata.get(_TAG)
        revoked = self._revoked_caller(context)
        if revoked is not None:
            log.warning("%s: refused a message from %r: %s", self.me, src, revoked)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, revoked)
        if not isinstance(src, str) or src not in self.peers or src not in names:
            log.warning("%s: refused a message from certificate %s claiming to be %r", self.me, names, src)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"certificate {names} is not peer {src!r} of this job"
            )
        if not isinstance(tag, bytes):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing message tag")
        assert isinstance(src, str) and isinstance(tag, bytes)  # invariant: abort() raised otherwise
        try:
            self.inbox.put(src, tag.decode(errors="replace"), request)
        except InboxQuotaExceeded as exc:
            log.warning("%s: %s", self.me, exc)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return b""

    def close(self, grace: float = 1.0) -> None:
        """Stop the server and close every channel."""
        self._server.stop(grace).wait(grace + 1.0)
        with self._lock:
            for channel in self._channels:
                channel.close()
            self._channels.clear()
            self._calls.clear()
