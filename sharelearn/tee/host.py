"""The enclave host: the untrusted agent of one (simulated) machine (TEE.md §3).

`EnclaveHost` owns a `SimPlatform`, launches instances of measured service bundles as separate OS
processes, relays calls to them from a loopback endpoint and drives key sync between its
instances: it only relays ASC-1 messages; the joiner and the holder mutually attest ("same
MRENCLAVE as me", checked inside each enclave) and the cluster root key crosses only the attested
channel. It learns ciphertexts and fingerprints, never keys. Launch, kill and upgrade are signed
control commands (`control`); it heartbeats to the cluster manager with its own signed key.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharelearn.core.errors import (
    ConfigError,
    ProtocolError,
    SharelearnError,
)
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveImage
from sharelearn.tee.control import ControlSigner
from sharelearn.tee.endpoint import control_call, make_admin, serve_endpoint
from sharelearn.tee.sim.backend import SimBackend, SimEnclave
from sharelearn.tee.sim.platform import SimPlatform

__all__ = ["EnclaveHost", "Instance"]


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
        self.admin, self.control = make_admin(admin)
        self.signer = ControlSigner(key)
        self.platform = platform or SimPlatform()
        self.backend = SimBackend(self.platform, Ed25519PrivateKey.generate())
        self.instances: dict[str, Instance] = {}
        self.images: dict[str, EnclaveImage] = {}
        self.models: dict[bytes, list[bytes]] = {}  # mrenclave -> sealed model blobs to replay
        self._ids = itertools.count(1)
        self._server, self.endpoint = serve_endpoint(self._handle)
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
