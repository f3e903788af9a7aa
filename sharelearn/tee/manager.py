"""The cluster manager (`sharelearn tee cm`): untrusted routing by heartbeat (TEE.md §3).

Instances register and heartbeat (signed by an admitted host key); the CM keeps the routing
table of live instances per measurement, drops instances whose heartbeats stop, and publishes
weights for rolling upgrades (set by signed admin commands). It holds no secrets: clients
re-verify every instance's statement themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sharelearn.core.errors import (
    AttestationError,
    ConfigError,
    ProtocolError,
)
from sharelearn.core.types import Wire
from sharelearn.tee.control import ControlVerifier
from sharelearn.tee.endpoint import make_admin, serve_endpoint

__all__ = ["ClusterManager"]


@dataclass
class _Member:
    iid: str
    endpoint: str
    mrenclave: bytes
    fpr: str
    load: int
    last: float
    host: str = ""  # the host key (hex) whose heartbeats registered it


class ClusterManager:
    """Untrusted routing service: registration by heartbeat, lease expiry, weights per measurement.

    It holds no secrets and verifies nothing a client relies on: clients re-verify every
    instance's statement themselves. A missing heartbeat for `lease_s` removes an instance.
    """

    def __init__(
        self,
        *,
        lease_s: float = 0.8,
        port: int = 0,
        admin: Sequence[str] | None = None,
        hosts: Sequence[str] = (),
    ) -> None:
        """`admin`: keys (hex) whose signed commands may set weights and admit hosts (None: a
        fresh key, `self.admin`); `hosts`: host keys whose signed heartbeats are accepted."""
        self.admin, self.control = make_admin(admin)
        self.hosts = ControlVerifier(hosts)
        self.lease_s = lease_s
        self.members: dict[str, _Member] = {}
        self.weights: dict[str, float] = {}  # mrenclave hex -> routing weight (rolling upgrade)
        self.removed: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._server, self.endpoint = serve_endpoint(self._handle, port)
        self.control.endpoint = self.hosts.endpoint = self.endpoint

    def admit_host(self, key_hex: str) -> None:
        """Accept heartbeats signed by this host key (in-process; remotely: signed `add_host`)."""
        self.hosts.admit(key_hex)

    def _expire(self, now: float) -> None:
        for iid, m in list(self.members.items()):
            if now - m.last > self.lease_s:
                del self.members[iid]
                self.removed.append((iid, now))

    def _handle(self, msg: dict[str, Wire]) -> Wire:
        now = time.monotonic()
        with self._lock:
            if msg["op"] in ("set_weights", "add_host"):
                self.control.check(msg, f"cluster manager {msg['op']}")
            if msg["op"] == "add_host" and isinstance(msg.get("pk"), str):
                self.hosts.admit(str(msg["pk"]))
                return {"ack": True}
            if msg["op"] == "heartbeat":
                host = self.hosts.check(msg, "heartbeat")
                iid, ep, mre = msg.get("iid"), msg.get("endpoint"), msg.get("mrenclave")
                if not (isinstance(iid, str) and isinstance(ep, str) and isinstance(mre, bytes)):
                    raise ConfigError("heartbeat needs iid, endpoint and mrenclave")
                if iid in self.members and self.members[iid].host != host:
                    raise AttestationError(f"heartbeat for {iid} refused: it belongs to another host")
                load = msg.get("load")
                self.members[iid] = _Member(
                    iid, ep, mre, str(msg.get("fpr", "")), load if isinstance(load, int) else 0, now, host
                )
                self.weights.setdefault(mre.hex(), 1.0)
                return {"ack": True}
            if msg["op"] == "table":
                self._expire(now)
                return {
                    "weights": dict(self.weights),
                    "instances": [
                        {
                            "iid": m.iid,
                            "endpoint": m.endpoint,
                            "mrenclave": m.mrenclave,
                            "fpr": m.fpr,
                            "load": m.load,
                        }
                        for m in self.members.values()
                    ],
                }
            if msg["op"] == "set_weights":
                weights = msg.get("weights")
                if not isinstance(weights, dict):
                    raise ConfigError("set_weights needs a map mrenclave-hex -> weight")
                self.weights = {str(k): float(v) for k, v in weights.items()}  # type: ignore[arg-type]
                return dict(self.weights)
        raise ProtocolError(f"unknown CM request {msg['op']!r}", peer="client")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
