"""The client SDK of the TEE route: attests instances itself, balances, fails over (TEE.md §3).

`TeeClient` verifies each instance's cluster statement against its OWN policy (the CM only
relays routes), balances over instances by weight and retries the *same* ciphertext on another
instance when one fails (stateless data plane).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sharelearn.core.errors import (
    AttestationError,
    ConfigError,
    ProtocolError,
    RequestRefused,
)
from sharelearn.core.types import Wire
from sharelearn.tee.endpoint import call_endpoint
from sharelearn.tee.keys import AttestedClusterKey, verify_statement
from sharelearn.tee.policy import AttestationPolicy

__all__ = ["TeeClient"]


class TeeClient:
    """Client SDK: verifies each instance's cluster statement itself, balances, fails over.

    Args:
        policy: the client's OWN attestation policy (accepted measurements); the CM cannot widen it.
        cm: the cluster manager endpoint (routing only), or
        endpoints: fixed host endpoints when no CM is used.
    """

    def __init__(
        self,
        policy: AttestationPolicy,
        *,
        cm: str | None = None,
        endpoints: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> None:
        if cm is None and not endpoints:
            raise ConfigError("TeeClient needs a cluster manager endpoint or host endpoints")
        self.policy, self.cm, self.timeout = policy, cm, timeout
        self._static = list(endpoints)
        self._attested: dict[tuple[str, str], AttestedClusterKey] = {}  # (endpoint, iid) -> key
        self.table_ttl_s = 0.25
        self._table: tuple[float, list[tuple[str, str, float]]] = (0.0, [])
        self._down: dict[tuple[str, str], float] = {}  # circuit breaker: route -> retry-after time
        self._lock = threading.Lock()
        self.retries = 0
        self.failovers: list[float] = []  # seconds from a call's start to its success after a failure

    def routes(self, *, fresh: bool = False) -> list[tuple[str, str, float]]:
        """(endpoint, instance id, weight) of instances whose measurement our policy accepts.

        The CM table is cached for `table_ttl_s` (refreshed at once after a failure); routes that
        failed recently are skipped for a cooldown (circuit breaker).
        """
        now = time.monotonic()
        with self._lock:
            cached_at, cached = self._table
        if fresh or now - cached_at > self.table_ttl_s:
            cached = self._fetch_routes()
            with self._lock:
                self._table = (now, cached)
        return [r for r in cached if self._down.get((r[0], r[1]), 0.0) <= now]

    def _fetch_routes(self) -> list[tuple[str, str, float]]:
        if self.cm is None:
            return [(ep, "", 1.0) for ep in self._static]
        table = call_endpoint(self.cm, {"op": "table"}, timeout=self.timeout)
        assert isinstance(table, dict)  # invariant: CM contract (content is re-verified below)
        weights: dict[str, Any] = table["weights"]  # type: ignore[assignment]
        out = []
        for inst in table["instances"]:  # type: ignore[union-attr]
            mre = inst["mrenclave"]  # type: ignore[index, call-overload]
            if not any(r.mrenclave == mre for r in self.policy.accept):
                continue  # the CM cannot route us to a measurement our own policy does not accept
            out.append((str(inst["endpoint"]), str(inst["iid"]), float(weights.get(mre.hex(), 1.0))))  # type: ignore[index, call-overload, union-attr]
        return out

    def attest(self, endpoint: str, iid: str = "") -> AttestedClusterKey:
        """Fetch a fresh statement (our nonce) from one instance and verify it under our policy."""
        key = (endpoint, iid)
        if key not in self._attested:
            nonce = os.urandom(32)
            out = call_endpoint(
                endpoint,
                {"op": "call", "instance": iid, "method": "statement", "arg": nonce},
                timeout=self.timeout,
            )
            if not isinstance(out, dict) or not isinstance(out.get("statement"), bytes):
                raise AttestationError(f"{endpoint}: no cluster key statement")
            self._attested[key] = verify_statement(out["statement"], out["quote"], self.policy, nonce)  # type: ignore[arg-type]
        return self._attested[key]

    def call(
        self, method: str, make_arg: Callable[[AttestedClusterKey], Wire], *, attempts: int = 4
    ) -> tuple[Wire, str]:
        """Call `method` on a weighted-random healthy instance; on failure retry on another one.

        `make_arg` builds the (encrypted) argument for the attested key of the chosen instance's
        cluster; instances of one cluster share the key, so a retry resends the same ciphertext.
        """
        import random

        errors: list[str] = []
        refusals: list[str] = []
        tried: set[tuple[str, str]] = set()
        cache: dict[str, Wire] = {}
        started = time.perf_counter()
        for attempt in range(attempts):
            routes = [r for r in self.routes(fresh=attempt > 0) if (r[0], r[1]) not in tried and r[2] > 0]
            if not routes:
                break
            ep, iid, _w = random.choices(routes, weights=[r[2] for r in routes])[0]
            tried.add((ep, iid))
            try:
                key = self.attest(ep, iid)
                arg = cache.setdefault(key.fingerprint, make_arg(key))
                value = call_endpoint(
                    ep, {"op": "call", "instance": iid, "method": method, "arg": arg}, timeout=self.timeout
                )
                if errors:
                    self.failovers.append(time.perf_counter() - started)
                return value, key.fingerprint
            except RequestRefused as exc:
                # The instance is alive and refused this request: another one may hold what it
                # lacks (a model still being replayed), so try it, but leave this route in service.
                refusals.append(f"{ep}/{iid}: {exc}")
            except (ProtocolError, OSError, AttestationError) as exc:
                # An instance that fails attestation (e.g. a CM routing us to an impostor) is
                # treated like a dead one: skipped, never sent data.
                self.retries += 1
                self._down[(ep, iid)] = time.monotonic() + 2.0
                errors.append(f"{ep}/{iid}: {exc}")
                self._attested.pop((ep, iid), None)
        if refusals and not errors:
            raise RequestRefused(
                f"{method} refused by every instance tried: {refusals}", peer="tee-cluster", tag=method
            )
        if errors and all("refused by policy" in e or "statement" in e for e in errors):
            raise AttestationError(f"{method}: no instance passed attestation: {errors}")
        raise ProtocolError(
            f"{method} failed on every instance tried: {errors}", peer="tee-cluster", tag=method
        )
