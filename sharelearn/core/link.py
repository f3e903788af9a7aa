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

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "BaseLink",
    "Inbox",
    "InboxQuotaExceeded",
    "Link",
    "LinkStats",
    "PeerStats",
    "ScopedLink",
]

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


class InboxQuotaExceeded(ProtocolError):
    """A peer sent more unread data than the receiver's `Limits` allow; the peer is now refused."""


# Charged per queued message on top of its payload: the bytes object, deque slot and dict entry,
# so a flood of tiny messages is counted at about what it really costs.
_MESSAGE_OVERHEAD = 160


@dataclass(slots=True)
class _PeerQueue:
    """What one peer has sent that is not read yet: messages by tag, and their total cost."""

    by_tag: dict[str, deque[bytes]] = field(default_factory=dict)
    nbytes: int = 0
    messages: int = 0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


class Inbox:
    """Messages delivered to one party, keyed by (sender, tag), in arrival order per key.

    Transports deliver with `put` from their own threads; `get` blocks the role function until
    the message is there, the sender is marked failed, or the deadline passes.

    Every sender is bounded by `limits` (`max_queued_bytes`, `max_queued_messages`,
    `max_unread_tags`): a protocol may send ahead as far as those allow. The message that would
    go past them fails the sender instead: its queued messages are dropped (the memory is
    released), every later message from it is refused (`refusal`), and a receive waiting on it
    raises a ProtocolError naming it. The audit records only the messages accepted.
    """

    def __init__(
        self, owner: PartyId, audit: WireAudit | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.owner = owner
        self.audit = audit
        self.limits = limits
        self._peers: dict[PartyId, _PeerQueue] = {}
        self._failed: dict[PartyId, str] = {}
        self._refused: dict[PartyId, str] = {}
        self._cond = threading.Condition()

    def put(self, src: PartyId, tag: str, payload: bytes) -> None:
        """Queue `payload` from `src` under `tag`.

        Raises:
            InboxQuotaExceeded: `src` is over its quota (now or before); nothing was queued.
        """
        cost = len(payload) + len(tag) + _MESSAGE_OVERHEAD
        with self._cond:
            if src in self._refused:
                raise InboxQuotaExceeded(self._refused[src], peer=src, tag=tag)
            peer = self._peers.setdefault(src, _PeerQueue())
            queue = peer.by_tag.get(tag)
            if peer.messages and self._over_quota(peer, cost, new_tag=queue is None):
                tags = len(peer.by_tag) + (queue is None)
                self._refuse(src, peer.nbytes + cost, peer.messages + 1, tags)
                raise InboxQuotaExceeded(self._refused[src], peer=src, tag=tag)
            if queue is None:
                queue = peer.by_tag[tag] = deque()
            queue.append(payload)
            peer.nbytes += cost
            peer.messages += 1
            self._cond.notify_all()
        if self.audit is not None:
            self.audit.record(src, self.owner, tag, payload)

    def _over_quota(self, peer: _PeerQueue, cost: int, *, new_tag: bool) -> bool:
        lim = self.limits
        return (
            peer.nbytes + cost > lim.max_queued_bytes
            or peer.messages + 1 > lim.max_queued_messages
            or (new_tag and len(peer.by_tag) + 1 > lim.max_unread_tags)
        )

    def _refuse(self, src: PartyId, nbytes: int, messages: int, tags: int) -> None:
        """Mark `src` failed and refused, and drop what it queued (called under the lock)."""
        lim = self.limits
        reason = (
            f"peer {src!r} exceeded its inbox quota at {self.owner!r}: {_mib(nbytes)} queued in "
            f"{messages:,} messages under {tags:,} unread tags (limits per peer: "
            f"{_mib(lim.max_queued_bytes)}, {lim.max_queued_messages:,} messages, "
            f"{lim.max_unread_tags:,} tags)"
        )
        self._refused[src] = reason
        self._failed.setdefault(src, reason)
        dropped = self._peers.pop(src, None)
        if dropped is not None:  # clear it too: the error's traceback still holds the put() frame
            dropped.by_tag.clear()
        self._cond.notify_all()

    def refusal(self, src: PartyId) -> str | None:
        """Why messages from `src` are refused, or None while it is within its quota."""
        with self._cond:
            return self._refused.get(src)

    def fail(self, src: PartyId, reason: str) -> None:
        """Wake every receive waiting on `src` with a ProtocolError naming `reason`."""
        with self._cond:
            self._failed[src] = reason
            self._cond.notify_all()

    def get(self, src: PartyId, tag: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                payload = self._pop(src, tag)
                if payload is not None:
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

    def _pop(self, src: PartyId, tag: str) -> bytes | None:
        peer = self._peers.get(src)
        queue = peer.by_tag.get(tag) if peer is not None else None
        if peer is None or not queue:
            return None
        payload = queue.popleft()
        if not queue:
            del peer.by_tag[tag]
        peer.nbytes -= len(payload) + len(tag) + _MESSAGE_OVERHEAD
        peer.messages -= 1
        return payload

    def pending(self) -> int:
        """Messages queued and not read yet, from every peer."""
        with self._cond:
            return sum(p.messages for p in self._peers.values())

    def queued_bytes(self, src: PartyId | None = None) -> int:
        """Bytes charged to `src` (or every peer) for messages not read yet."""
        with self._cond:
            peers = self._peers.values() if src is None else [self._peers.get(src, _PeerQueue())]
            return sum(p.nbytes for p in peers)


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
