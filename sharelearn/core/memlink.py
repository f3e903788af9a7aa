"""In-memory network for running every role in a thread of one process.

Messages go through the real codec (encode on send, decode on receive), so unit tests exercise
the same wire format as the gRPC link.
"""

from __future__ import annotations

from collections.abc import Iterable

from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import DEFAULT_LIMITS, Limits
from sharelearn.core.errors import ProtocolError
from sharelearn.core.link import DEFAULT_TIMEOUT_S, BaseLink, Inbox, InboxQuotaExceeded
from sharelearn.core.types import PartyId

__all__ = ["MemLink", "MemNetwork"]


class MemNetwork:
    """A set of parties wired to each other through in-memory queues."""

    def __init__(
        self,
        parties: Iterable[PartyId],
        *,
        audit: WireAudit | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.parties = tuple(parties)
        if len(set(self.parties)) != len(self.parties):
            raise ValueError(f"party names must be unique: {self.parties}")
        self.audit = audit if audit is not None else WireAudit()
        self._inboxes = {p: Inbox(p, self.audit, limits) for p in self.parties}
        self._links = {p: MemLink(self, p, timeout=timeout, limits=limits) for p in self.parties}

    def link(self, party: PartyId) -> MemLink:
        return self._links[party]

    def inbox(self, party: PartyId) -> Inbox:
        return self._inboxes[party]

    def fail(self, party: PartyId, reason: str) -> None:
        """Tell every other party that `party` is gone, waking their receives."""
        for p, inbox in self._inboxes.items():
            if p != party:
                inbox.fail(party, reason)


class MemLink(BaseLink):
    """One party's end of a MemNetwork."""

    def __init__(self, net: MemNetwork, me: PartyId, *, timeout: float, limits: Limits) -> None:
        super().__init__(me, net.parties, net.inbox(me), timeout=timeout, limits=limits)
        self._net = net

    def _transmit(self, peer: PartyId, tag: str, payload: bytes) -> None:
        if len(payload) > self.limits.max_message_bytes:
            raise ProtocolError(
                f"{self.me}: message {tag!r} for {peer!r} has {len(payload)} bytes, over the limit",
                peer=peer,
                tag=tag,
            )
        try:
            self._net.inbox(peer).put(self.me, tag, payload)
        except InboxQuotaExceeded as exc:
            raise ProtocolError(
                f"{self.me}: sending {tag!r} to {peer!r} was refused: {exc}", peer=peer, tag=tag
            ) from exc
