"""A host's replica set as the guest sees it (balancing, failover, a deadline); the partial-result cache."""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sharelearn.core.errors import ProtocolError
from sharelearn.runtime.certs import PartyCredentials
from sharelearn.runtime.serving.wire import RpcClient, RpcFailed

__all__ = ["HostUnavailable", "PartialCache", "ReplicaSet"]

# Codes after which another replica may answer; a refusal (FAILED_PRECONDITION) is the same everywhere.
_RETRY = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL", "RESOURCE_EXHAUSTED"}


class HostUnavailable(ProtocolError):
    """No replica of a host answered within the deadline (HTTP 503)."""


class ReplicaSet:
    """The replicas of one host party: round-robin balancing, failover to the next on a transport error."""

    def __init__(self, creds: PartyCredentials, party: str, addresses: Sequence[str]) -> None:
        if not addresses:
            raise ProtocolError(f"host {party!r}: no replica address given", peer=party)
        self.party = party
        self.clients = [RpcClient(creds, party, a) for a in addresses]
        self._next = itertools.count()

    def call(self, method: str, doc: Mapping[str, Any], *, deadline: float) -> dict[str, Any]:
        """Call one replica, the next on failure, until one answers or `deadline` (monotonic) passes."""
        start = next(self._next) % len(self.clients)
        errors: list[str] = []
        for k in range(len(self.clients)):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            client = self.clients[(start + k) % len(self.clients)]
            try:
                return client.call(method, doc, timeout=left)
            except RpcFailed as exc:
                if exc.code not in _RETRY:
                    raise
                errors.append(f"{client.address}: {exc.code}")
        raise HostUnavailable(
            f"host {self.party!r} unavailable: no replica answered {method} within the deadline "
            f"({'; '.join(errors) or 'deadline already passed'})",
            peer=self.party,
        )

    def call_all(self, method: str, doc: Mapping[str, Any], *, timeout: float) -> list[dict[str, Any]]:
        """Call every replica (used for loading and activating versions); any failure raises."""
        return [c.call(method, doc, timeout=timeout) for c in self.clients]

    def close(self) -> None:
        for c in self.clients:
            c.close()


class PartialCache:
    """Host partial results keyed by (model, version, host, id), each kept `ttl` seconds.

    Holds only what a host sent (its partial results), never a feature value.
    """

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._items: OrderedDict[tuple[str, int, str, str], tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, int, str, str]) -> np.ndarray | None:
        if self.ttl <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < now:
                self.misses += 1
                if item is not None:
                    del self._items[key]
                return None
            self.hits += 1
            return item[1]

    def put(self, key: tuple[str, int, str, str], row: np.ndarray) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, row)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
