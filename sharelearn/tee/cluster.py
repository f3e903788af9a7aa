"""Enclave hosts, the cluster manager (CM) and the client SDK of the TEE route (TEE.md §3).

`EnclaveHost` is the untrusted host agent of one simulated machine: it owns a `SimPlatform`,
launches instances of one measured service bundle as separate OS processes, relays calls to them
from a loopback TCP endpoint (length-prefixed codec frames), and drives key sync between its
instances: the host only relays ASC-1 messages; the joiner and the holder mutually attest
("same MRENCLAVE as me", checked inside each enclave) and the cluster root key crosses only the
attested channel. The host learns ciphertexts and fingerprints, never keys.

`ClusterManager` (`sharelearn tee cm`) is untrusted for confidentiality: instances register and
heartbeat; it keeps the routing table of live instances per measurement, drops instances whose
heartbeats stop, asks hosts to sync keys to new instances, and publishes weights for rolling
upgrades (two accepted measurements side by side). `TeeClient` is the SDK: it verifies
attestation itself against its own policy (the CM only relays), balances over instances and
retries the *same* ciphertext on another instance when one fails (stateless data plane).

SIMULATION: hosts built on `SimPlatform` give no memory confidentiality (TEE.md §2.4); every
statement they produce is labelled SIMULATION in-band and refused unless a policy pins the root.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharelearn.core.errors import (
    AttestationError,
    ConfigError,
    ProtocolError,
    RequestRefused,
    SharelearnError,
)
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveImage
from sharelearn.tee.control import ControlSigner, ControlVerifier
from sharelearn.tee.frames import recv_frame, send_frame
from sharelearn.tee.keys import AttestedClusterKey, verify_statement
from sharelearn.tee.policy import AttestationPolicy
from sharelearn.tee.sim import SimBackend, SimEnclave
from sharelearn.tee.simplatform import SimPlatform

__all__ = [
    "ClusterManager",
    "EnclaveHost",
    "Instance",
    "TeeClient",
    "call_endpoint",
    "control_call",
]


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


def _admin(admin: Sequence[str] | None) -> tuple[ControlSigner | None, ControlVerifier]:
    """The verifier of control commands; with no admin keys given, a fresh admin key held here."""
    if admin is not None:
        return None, ControlVerifier(admin)
    signer = ControlSigner()
    return signer, ControlVerifier([signer.public])


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(handler: Callable[[dict[str, Wire]], Wire], port: int = 0) -> tuple[_Server, str]:
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


@dataclass
class Instance:
    """One enclave instance as its host sees it."""

    iid: str
    enclave: SimEnclave
    image: EnclaveImage
    lock: threading.Lock = field(default_factory=threading.Lock)
    fpr: str = ""
    sealed: bytes = b""

    @property
    def alive(self) -> bool:
        return self.enclave._proc.poll() is None

    def call(self, method: str, arg: Wire = None, timeout: float = 600.0) -> Wire:
        with self.lock:
            return self.enclave.call(method, arg, timeout=timeout)


class EnclaveHost:
    """Host agent of one simulated machine: launches instances, relays calls, drives key sync."""

    def __init__(
        self,
        platform: SimPlatform | None = None,
        *,
        cm: str | None = None,
        hb_s: float = 0.2,
        admin: Sequence[str] | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> None:
        """`admin`: Ed25519 keys (hex) whose signed commands may launch, kill and upgrade here
        (None: a fresh key, `self.admin`, for the in-process owner); `key` signs heartbeats."""
        self.admin, self.control = _admin(admin)
        self.signer = ControlSigner(key)
        self.platform = platform or SimPlatform()
        self.backend = SimBackend(self.platform, Ed25519PrivateKey.generate())
        self.instances: dict[str, Instance] = {}
        self.images: dict[str, EnclaveImage] = {}
        self.models: dict[bytes, list[bytes]] = {}  # mrenclave -> sealed model blobs to replay
        self._ids = itertools.count(1)
        self._server, self.endpoint = _serve(self._handle)
        self.control.endpoint = self.endpoint
        self.cm = cm
        self.hb_s = hb_s
        self._stop = threading.Event()
        if cm is not None:
            threading.Thread(target=self._heartbeat_loop, name="tee-heartbeat", daemon=True).start()

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self, bundle: Path, name: str = "") -> EnclaveImage:
        image = self.backend.load(bundle)
        self.images[name or bundle.name] = image
        return image

    def launch(self, image: EnclaveImage, *, holder: Instance | None = None) -> Instance:
        """Start an instance; the first of a measurement generates the cluster key, later ones sync."""
        inst = Instance(f"i{next(self._ids)}-{os.getpid()}", self.backend.launch(image), image)
        self.instances[inst.iid] = inst
        peers = [
            i
            for i in self.instances.values()
            if i is not inst and i.fpr and i.alive and i.image.identity.mrenclave == image.identity.mrenclave
        ]
        if holder is not None:
            self.sync(inst, holder)
        elif peers:
            self.sync(inst, peers[0])
        else:
            self._installed(inst, inst.call("generate_key"))
        for blob in self.models.get(image.identity.mrenclave, []):
            inst.call("load_model", blob)  # a scaled-out instance serves the cluster's models
        if self.cm is not None:
            self._beat(inst)
        return inst

    def upgrade(self, new: Instance, old: Instance, authz: bytes, sig: bytes) -> list[str]:
        """Rolling upgrade: move the models of `old` (M1) to `new` (M2) under the owner's authz.

        Both enclaves check the owner's signature against the owner key in their *measured*
        config and attest each other over ASC-1; this host only relays.
        """
        sid = os.urandom(8).hex()
        auth: dict[str, Wire] = {"authz": authz, "sig": sig}
        m1 = new.call("upgrade_start", {"sid": sid, **auth})
        m2 = old.call("upgrade_respond", {"sid": sid, "m1": m1, **auth})
        m3 = new.call("upgrade_finish", {"sid": sid, "m2": m2, **auth})
        record = old.call("upgrade_send", {"sid": sid, "m3": m3})
        ids = new.call("upgrade_install", {"sid": sid, "record": record})
        if not isinstance(ids, list):
            raise ProtocolError("upgrade_install returned no model ids", peer=new.iid)
        return [str(i) for i in ids]

    def sync(self, joiner: Instance, holder: Instance) -> str:
        """Key sync between two local instances; this host only relays the ASC-1 messages."""
        sid = os.urandom(8).hex()
        m1 = joiner.call("sync_start", sid)
        m2 = holder.call("sync_respond", {"sid": sid, "m1": m1})
        m3 = joiner.call("sync_finish", {"sid": sid, "m2": m2})
        record = holder.call("sync_send", {"sid": sid, "m3": m3})
        return self._installed(
            joiner, joiner.call("sync_install", {"sid": sid, "record": record, "expect_fpr": holder.fpr})
        )

    @staticmethod
    def _installed(inst: Instance, out: Wire) -> str:
        if not isinstance(out, dict):
            raise ProtocolError("sync_install returned no fingerprint", peer=inst.iid)
        inst.fpr, inst.sealed = str(out["fpr"]), bytes(out["sealed"])  # type: ignore[arg-type]
        return inst.fpr

    def kill(self, iid: str) -> int:
        """Fault injection: SIGKILL one instance's enclave process; return its pid."""
        inst = self.instances[iid]
        pid = inst.enclave.pid
        os.kill(pid, 9)
        inst.enclave._proc.wait(10)
        return pid

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for inst in self.instances.values():
            with contextlib.suppress(Exception):
                inst.enclave.close()
        self.instances.clear()

    def __enter__(self) -> EnclaveHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- data plane --------------------------------------------------------------------------
    def _pick(self, iid: Wire) -> Instance:
        if isinstance(iid, str) and iid:
            inst = self.instances.get(iid)
            if inst is None or not inst.alive:
                raise ProtocolError(f"instance {iid} is not running on this host", peer=iid)
            return inst
        live = [i for i in self.instances.values() if i.alive and i.fpr]
        if not live:
            raise ProtocolError("no live instance with a cluster key on this host", peer=self.endpoint)
        return min(live, key=lambda i: i.lock.locked())

    def _handle(self, msg: dict[str, Wire]) -> Wire:
        if msg["op"] == "info":
            return self.info()
        if msg["op"] in ("launch", "kill", "upgrade"):
            self.control.check(msg, f"host {msg['op']}")
        if msg["op"] == "call" and isinstance(msg.get("method"), str):
            inst = self._pick(msg.get("instance"))
            value = inst.call(str(msg["method"]), msg.get("arg"))
            blob = msg.get("arg")
            if msg["method"] == "load_model" and isinstance(blob, bytes):
                known = self.models.setdefault(inst.image.identity.mrenclave, [])
                if blob not in known:
                    known.append(blob)
            return value
        if msg["op"] == "launch":
            image = self.images.get(str(msg.get("image")))
            if image is None:
                raise ConfigError(f"unknown image {msg.get('image')!r}; known: {sorted(self.images)}")
            return self.launch(image).iid
        if msg["op"] == "kill" and isinstance(msg.get("iid"), str):
            return self.kill(str(msg["iid"]))
        if msg["op"] == "upgrade":
            authz, sig = msg.get("authz"), msg.get("sig")
            new, old = self.instances.get(str(msg.get("new"))), self.instances.get(str(msg.get("old")))
            if new is None or old is None or not isinstance(authz, bytes) or not isinstance(sig, bytes):
                raise ConfigError("upgrade needs new, old (instance ids), authz and sig")
            ids = self.upgrade(new, old, authz, sig)
            self.models[new.image.identity.mrenclave] = []
            return list[Wire](ids)
        raise ProtocolError(f"unknown host request {msg['op']!r}", peer="client")

    def info(self) -> dict[str, Wire]:
        return {
            "endpoint": self.endpoint,
            "simulation": True,
            "simulation_root_der": self.platform.root_der,
            "instances": [
                {
                    "iid": i.iid,
                    "pid": i.enclave.pid,
                    "alive": i.alive,
                    "fpr": i.fpr,
                    "mrenclave": i.image.identity.mrenclave,
                }
                for i in self.instances.values()
            ],
        }

    # -- CM heartbeats -----------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        assert self.cm is not None  # invariant: only started with a CM
        while not self._stop.wait(self.hb_s):
            for inst in list(self.instances.values()):
                self._beat(inst)

    def _beat(self, inst: Instance) -> None:
        if self.cm is None or not inst.alive or not inst.fpr:
            return  # a dead instance sends nothing: the CM drops it when its lease runs out
        with contextlib.suppress(SharelearnError, OSError):
            control_call(
                self.cm,
                self.signer,
                {
                    "op": "heartbeat",
                    "iid": inst.iid,
                    "endpoint": self.endpoint,
                    "mrenclave": inst.image.identity.mrenclave,
                    "fpr": inst.fpr,
                    "load": int(inst.lock.locked()),
                },
                timeout=2.0,
            )


@dataclass
class _Member:
    iid: str
    endpoint: str
    mrenclave: bytes
    fpr: str
    load: int
    last: float


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
        self.admin, self.control = _admin(admin)
        self.hosts = ControlVerifier(hosts)
        self.lease_s = lease_s
        self.members: dict[str, _Member] = {}
        self.weights: dict[str, float] = {}  # mrenclave hex -> routing weight (rolling upgrade)
        self.removed: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._server, self.endpoint = _serve(self._handle, port)
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
                self.hosts.check(msg, "heartbeat")
                iid, ep, mre = msg.get("iid"), msg.get("endpoint"), msg.get("mrenclave")
                if not (isinstance(iid, str) and isinstance(ep, str) and isinstance(mre, bytes)):
                    raise ConfigError("heartbeat needs iid, endpoint and mrenclave")
                load = msg.get("load")
                self.members[iid] = _Member(
                    iid, ep, mre, str(msg.get("fpr", "")), load if isinstance(load, int) else 0, now
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
