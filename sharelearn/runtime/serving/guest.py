"""The guest serving process: scores rows online with its part and every host's partial results.

A request names ids and carries the guest's own features (by column name). The guest asks each
host party (one of its replicas, `replicas.ReplicaSet`) for its partial results of those ids, in
parallel and within the request's deadline, takes what it can from the partial-result cache, and
combines them with its own part (`scoring.GuestScorer`). An id a host does not know gives that
row an error; a host that does not answer in time fails the request naming it (HTTP 503).

Versions: `prepare(v)` loads v at the guest and at every replica of every host (phase one; any
refusal aborts and names the party); `switch(v)` makes v active at once for every new request
(phase two) and tells the hosts; `rollback()` returns to the previous version; `set_canary(v, share)`
sends a share of requests to a prepared v.

What the guest learns: each host's partial results for the ids it asks (see `scoring`), and the scores.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.core.codec import expect_array
from sharelearn.core.errors import ConfigError, DataError, ProtocolError
from sharelearn.runtime.certs import PartyCredentials
from sharelearn.runtime.serving.host import find_package
from sharelearn.runtime.serving.metrics import ServingMetrics
from sharelearn.runtime.serving.replicas import HostUnavailable, PartialCache, ReplicaSet
from sharelearn.runtime.serving.scoring import GuestScorer, guest_scorer

__all__ = ["BatchTooLarge", "GuestConfig", "GuestService", "Prediction"]


class BatchTooLarge(ConfigError):
    """A request carries more rows than the guest's batch cap (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """Settings of a guest serving process.

    Attributes:
        party / model_id / folder: this party, the served model, the folder of its packages.
        hosts: each host party's replica addresses ("host:port").
        deadline_s: the longest a request may take, host calls included.
        max_batch: the most rows one request may carry.
        cache_ttl_s: how long host partial results are reused (0: no cache).
    """

    party: str
    model_id: str
    folder: Path
    hosts: Mapping[str, Sequence[str]]
    deadline_s: float = 1.0
    max_batch: int = 1024
    cache_ttl_s: float = 0.0

    def __post_init__(self) -> None:
        if self.deadline_s <= 0 or self.max_batch < 1 or self.cache_ttl_s < 0:
            raise ConfigError("serve guest: deadline, batch cap must be positive and the cache TTL >= 0")


@dataclass
class Prediction:
    """Scores of a request (None for a row in error), the per-row errors, the version that scored."""

    model_id: str
    version: int
    scores: list[Any]
    errors: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "version": self.version,
            "scores": self.scores,
            "errors": self.errors,
        }


def _wait(future: Future[Any], host: str, timeout: float) -> Any:
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        raise HostUnavailable(f"host {host!r} did not answer within the deadline", peer=host) from None


@dataclass
class GuestService:
    """The guest's serving state: versions, host replica sets, cache and metrics."""

    config: GuestConfig
    creds: PartyCredentials
    versions: dict[int, GuestScorer] = field(default_factory=dict)
    active: int = 0
    previous: int | None = None
    canary: tuple[int, float] | None = None
    metrics: ServingMetrics = field(default_factory=ServingMetrics)
    pools: dict[str, ReplicaSet] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.pools = {h: ReplicaSet(self.creds, h, a) for h, a in self.config.hosts.items()}
        self.cache = PartialCache(self.config.cache_ttl_s)
        self._threads = ThreadPoolExecutor(
            max_workers=max(4, 2 * len(self.pools)), thread_name_prefix="guest-hosts"
        )

    # -- versions --------------------------------------------------------------------------------
    def prepare(self, version: int | None = None) -> int:
        """Phase one: load `version` (None: the newest) here and on every replica of every host."""
        pkg = find_package(
            self.config.folder, party=self.config.party, model_id=self.config.model_id, version=version
        )
        scorer = guest_scorer(pkg)
        v = pkg.identity.version
        if set(scorer.hosts) != set(self.pools):
            raise ConfigError(
                f"model {self.config.model_id} v{v} needs hosts {list(scorer.hosts)}, "
                f"the guest was given {sorted(self.pools)}"
            )
        timeout = max(self.config.deadline_s, 5.0)
        for host in scorer.hosts:
            for reply in self.pools[host].call_all(
                "Load", {"model": self.config.model_id, "version": v}, timeout=timeout
            ):
                if reply.get("version") != v:
                    raise ProtocolError(
                        f"host {host!r} loaded version {reply.get('version')}, not {v}", peer=host
                    )
        with self._lock:
            self.versions[v] = scorer
        return v

    def switch(self, version: int) -> None:
        """Phase two: every new request uses `version` (prepared everywhere); the hosts are told."""
        with self._lock:
            if version not in self.versions:
                raise ConfigError(
                    f"version {version} of model {self.config.model_id} is not prepared; load it first"
                )
            if version != self.active:
                self.previous, self.active = (self.active or None), version
            if self.canary and self.canary[0] == version:
                self.canary = None
        self._tell_hosts(version)

    def rollback(self) -> int:
        """Make the previous version active again (it stays loaded everywhere)."""
        with self._lock:
            if self.previous is None:
                raise ConfigError(f"model {self.config.model_id}: no previous version to roll back to")
            self.active, self.previous = self.previous, self.active
            version = self.active
        self._tell_hosts(version)
        return version

    def set_canary(self, version: int | None, share: float = 0.0) -> None:
        """Send `share` (0..1) of requests without a version to prepared `version`; None stops it."""
        if version is None:
            self.canary = None
            return
        if version not in self.versions or not 0.0 <= share <= 1.0:
            raise ConfigError(
                f"canary needs a prepared version (have {sorted(self.versions)}) and a share in 0..1"
            )
        self.canary = (version, share)

    def _tell_hosts(self, version: int) -> None:
        for pool in self.pools.values():
            pool.call_all(
                "Activate",
                {"model": self.config.model_id, "version": version},
                timeout=self.config.deadline_s,
            )

    def status(self) -> dict[str, Any]:
        return {
            "party": self.config.party,
            "model_id": self.config.model_id,
            "active": self.active,
            "previous": self.previous,
            "loaded": sorted(self.versions),
            "canary": None if self.canary is None else {"version": self.canary[0], "share": self.canary[1]},
            "hosts": {h: [c.address for c in p.clients] for h, p in self.pools.items()},
            "latency_ms": self.metrics.percentiles(self.config.model_id),
            "cache": {"hits": self.cache.hits, "misses": self.cache.misses},
        }

    # -- scoring ---------------------------------------------------------------------------------
    def _pick(self, version: int | None) -> GuestScorer:
        with self._lock:
            if version is None:
                version = self.active
                if self.canary is not None and random.random() < self.canary[1]:
                    version = self.canary[0]
            scorer = self.versions.get(version)
        if scorer is None:
            raise ConfigError(
                f"model {self.config.model_id} has no loaded version {version} "
                f"(loaded {sorted(self.versions)})"
            )
        return scorer

    def _features(self, scorer: GuestScorer, features: Mapping[str, Sequence[float]], n: int) -> np.ndarray:
        missing = [c for c in scorer.names if c not in features]
        extra = [c for c in features if c not in scorer.names]
        if missing or extra:
            raise DataError(
                f"guest features: the model needs columns {list(scorer.names)}; "
                f"missing {missing}, unknown {extra}"
            )
        try:
            x = np.column_stack([np.asarray(features[c], dtype=np.float64) for c in scorer.names])
        except (TypeError, ValueError) as exc:
            raise DataError(f"guest features must be numbers: {exc}") from exc
        if x.shape[0] != n:
            raise DataError(f"guest features have {x.shape[0]} rows for {n} ids")
        return x

    def _host_partials(
        self, scorer: GuestScorer, host: str, ids: Sequence[str], deadline: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(partial rows, unknown mask) of one host; cached rows are not asked again."""
        ident = scorer.package.identity
        keys = [(ident.model_id, ident.version, host, i) for i in ids]
        cached = [self.cache.get(k) for k in keys]
        ask = [k for k, c in enumerate(cached) if c is None]
        unknown = np.zeros(len(ids), dtype=bool)
        rows: list[np.ndarray | None] = list(cached)
        if ask:
            doc = {"model": ident.model_id, "version": ident.version, "ids": [ids[k] for k in ask]}
            reply = self.pools[host].call("Partial", doc, deadline=deadline)
            got = np.asarray(reply.get("partial"))
            miss = expect_array(reply.get("unknown"), peer=host, tag="unknown", dtype=np.int64)
            if got.shape[0] != len(ask) or (miss.size and (miss.min() < 0 or miss.max() >= len(ask))):
                raise ProtocolError(
                    f"host {host!r} answered {got.shape[0]} rows for {len(ask)} ids", peer=host
                )
            bad = set(miss.tolist())
            for j, k in enumerate(ask):
                rows[k] = got[j]
                unknown[k] = j in bad
                if j not in bad:
                    self.cache.put(keys[k], got[j])
        return np.stack([r for r in rows if r is not None]), unknown

    def _all_partials(
        self, scorer: GuestScorer, ids: Sequence[str], deadline: float
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every host's partial results; in parallel when there are several hosts."""
        if len(scorer.hosts) == 1:  # no thread hop for the common single-host case
            return {h: self._host_partials(scorer, h, ids, deadline) for h in scorer.hosts}
        futures = {
            h: self._threads.submit(self._host_partials, scorer, h, ids, deadline) for h in scorer.hosts
        }
        return {h: _wait(f, h, self.config.deadline_s + 1.0) for h, f in futures.items()}

    def predict(
        self, ids: Sequence[str], features: Mapping[str, Sequence[float]], *, version: int | None = None
    ) -> Prediction:
        """Score `ids` with the guest's `features`; per-row errors for ids a host does not know."""
        start = time.monotonic()
        model = self.config.model_id
        try:
            if not 1 <= len(ids) <= self.config.max_batch:
                raise BatchTooLarge(f"a request carries 1..{self.config.max_batch} rows, this one {len(ids)}")
            scorer = self._pick(version)
            x = self._features(scorer, features, len(ids))
            deadline = start + self.config.deadline_s
            results = self._all_partials(scorer, ids, deadline)
        except Exception:
            self.metrics.error(model, "request")
            raise
        scores = scorer.score(x, [results[h][0] for h in scorer.hosts])
        errors = [
            {"row": k, "id": ids[k], "error": f"id unknown at host {h!r}"}
            for k in range(len(ids))
            for h in scorer.hosts
            if results[h][1][k]
        ]
        bad = {e["row"] for e in errors}
        out = [None if k in bad else np.asarray(scores[k]).tolist() for k in range(len(ids))]
        self.metrics.observe(model, scorer.package.identity.version, time.monotonic() - start, len(ids))
        if errors:
            self.metrics.error(model, "row", len(bad))
        return Prediction(model, scorer.package.identity.version, out, errors)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for pool in self.pools.values():
            pool.close()
