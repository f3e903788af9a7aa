"""The transport seam: the `Link` protocol every role function talks through.

A role function only ever calls `link.send(peer, tag, value)` and `link.recv(peer, tag)`.
`MemLink` (threads) and `GrpcLink` (processes, mutual TLS) both derive from `BaseLink`, so both
encode through the same codec, deliver into the same `Inbox`, count the same `LinkStats` and
feed the same `WireAudit`. Tags are made unique by `scope("epoch", 3, "batch", 7)`, which
prefixes every tag with "epoch/3/batch/7/".
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import DEFAULT_LIMITS, Limits, decode, encode
from sharelearn.core.errors import ConfigError, PeerTimeout, ProtocolError
from sharelearn.core.types import PartyId, Wire

__all__ = ["DEFAULT_TIMEOUT_S", "BaseLink", "Inbox", "Link", "LinkStats", "PeerStats", "ScopedLink"]

# Long enough for a 2048-bit Paillier batch on a slow peer, short enough to notice a dead one.
DEFAULT_TIMEOUT_S = 600.0
MAX_TAG_LEN = 512


@dataclass(slots=True)
class PeerStats:
    """Traffic with one peer."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0


@dataclass(slots=True)
class LinkStats:
    """Traffic of one party: per peer, in total, and communication rounds.

    A round is counted each time the party turns from sending to waiting for a message
    (as CrypTen counts them), so a request/response pair is one round.
    """

    peers: dict[PartyId, PeerStats] = field(default_factory=dict)
    rounds: int = 0

    def peer(self, peer: PartyId) -> PeerStats:
        return self.peers.setdefault(peer, PeerStats())

    @property
    def bytes_sent(self) -> int:
        return sum(p.bytes_sent for p in self.peers.values())

    @property
    def bytes_received(self) -> int:
        return sum(p.bytes_received for p in self.peers.values())

    @property
    def messages_sent(self) -> int:
        return sum(p.messages_sent for p in self.peers.values())

    @property
    def messages_received(self) -> int:
        return sum(p.messages_received for p in self.peers.values())

    def as_dict(self) -> dict[str, int]:
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "rounds": self.rounds,
        }


@runtime_checkable
class Link(Protocol):
    """What a role function may do with the network."""

    @property
    def me(self) -> PartyId: ...

    @property
    def peers(self) -> tuple[PartyId, ...]: ...

    def send(self, peer: PartyId, tag: str, value: Wire) -> None: ...

    def recv(self, peer: PartyId, tag: str, *, timeout: float | None = None) -> Wire: ...

    def scope(self, *parts: str | int) -> Link: ...

    @property
    def stats(self) -> LinkStats: ...


class Inbox:
    """Messages delivered to one party, keyed by (sender, tag), in arrival order per key.

    Transports deliver with `put` from their own threads; `get` blocks the role function until
    the message is there, the sender is marked failed, or the deadline passes.
    """

    def __init__(self, owner: PartyId, audit: WireAudit | None = None) -> None:
        self.owner = owner
        self.audit = audit
        self._queues: dict[tuple[PartyId, str], deque[bytes]] = {}
        self._failed: dict[PartyId, str] = {}
        self._cond = threading.Condition()

    def put(self, src: PartyId, tag: str, payload: bytes) -> None:
        if self.audit is not None:
            self.audit.record(src, self.owner, tag, payload)
        with self._cond:
            self._queues.setdefault((src, tag), deque()).append(payload)
            self._cond.notify_all()

    def fail(self, src: PartyId, reason: str) -> None:
        """Wake every receive waiting on `src` with a ProtocolError naming `reason`."""
        with self._cond:
            self._failed[src] = reason
            self._cond.notify_all()

    def get(self, src: PartyId, tag: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                queue = self._queues.get((src, tag))
                if queue:
                    payload = queue.popleft()
                    if not queue:
                        del self._queues[(src, tag)]
                    return payload
                if src in self._failed:
                    raise ProtocolError(
                        f"{self.owner}: peer {src!r} failed while waiting for {tag!r}: {self._failed[src]}",
                        peer=src,
                        tag=tag,
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerTimeout(
                        f"{self.owner}: no message {tag!r} from peer {src!r} within {timeout:g} s",
                        peer=src,
                        tag=tag,
                    )
                self._cond.wait(remaining)

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())


def _check_tag(tag: str) -> None:
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_LEN:
        raise ConfigError(
            f"message tag must be a non-empty string of at most {MAX_TAG_LEN} chars, got {tag!r}"
        )


class BaseLink(ABC):
    """Shared send/recv path: tag checks, codec, stats, rounds; subclasses move the bytes."""

    def __init__(
        self,
        me: PartyId,
        peers: Iterable[PartyId],
        inbox: Inbox,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._me = me
        self._peers = tuple(p for p in peers if p != me)
        self.inbox = inbox
        self.timeout = timeout
        self.limits = limits
        self._stats = LinkStats()
        self._stats_lock = threading.Lock()
        self._last_was_send = False

    @property
    def me(self) -> PartyId:
        return self._me

    @property
    def peers(self) -> tuple[PartyId, ...]:
        return self._peers

    @property
    def stats(self) -> LinkStats:
        return self._stats

    def _check_peer(self, peer: PartyId, tag: str) -> None:
        if peer not in self._peers:
            raise ProtocolError(
                f"{self._me}: {peer!r} is not a peer of this job (tag {tag!r})", peer=peer, tag=tag
            )

    def send(self, peer: PartyId, tag: str, value: Wire) -> None:
        _check_tag(tag)
        self._check_peer(peer, tag)
        try:
            payload = encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(
                f"{self._me}: cannot encode {tag!r} for {peer!r}: {exc}", peer=peer, tag=tag
            ) from exc
        self._transmit(peer, tag, payload)
        with self._stats_lock:
            st = self._stats.peer(peer)
            st.messages_sent += 1
            st.bytes_sent += len(payload)
            self._last_was_send = True

    def recv(self, peer: PartyId, tag: str, *, timeout: float | None = None) -> Wire:
        _check_tag(tag)
        self._check_peer(peer, tag)
        with self._stats_lock:
            if self._last_was_send:
                self._stats.rounds += 1
                self._last_was_send = False
        payload = self.inbox.get(peer, tag, self.timeout if timeout is None else timeout)
        with self._stats_lock:
            st = self._stats.peer(peer)
            st.messages_received += 1
            st.bytes_received += len(payload)
        return decode(payload, peer=peer, tag=tag, limits=self.limits)

    def scope(self, *parts: str | int) -> Link:
        return ScopedLink(self, _join(parts))

    @abstractmethod
    def _transmit(self, peer: PartyId, tag: str, payload: bytes) -> None:
        """Deliver `payload` to `peer`'s inbox; raise ProtocolError naming the peer on failure."""

    def close(self) -> None:  # noqa: B027 - optional hook, most links hold nothing
        """Release transport resources (no-op by default)."""


def _join(parts: tuple[str | int, ...]) -> str:
    if not parts:
        raise ConfigError("scope() needs at least one part")
    return "/".join(str(p) for p in parts)


class ScopedLink:
    """A view of a link whose tags all carry a prefix."""

    def __init__(self, base: Link, prefix: str) -> None:
        self._base = base
        self._prefix = prefix

    @property
    def me(self) -> PartyId:
        return self._base.me

    @property
    def peers(self) -> tuple[PartyId, ...]:
        return self._base.peers

    @property
    def stats(self) -> LinkStats:
        return self._base.stats

    def send(self, peer: PartyId, tag: str, value: Wire) -> None:
        self._base.send(peer, f"{self._prefix}/{tag}", value)

    def recv(self, peer: PartyId, tag: str, *, timeout: float | None = None) -> Wire:
        return self._base.recv(peer, f"{self._prefix}/{tag}", timeout=timeout)

    def scope(self, *parts: str | int) -> Link:
        return ScopedLink(self._base, f"{self._prefix}/{_join(parts)}")
