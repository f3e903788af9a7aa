"""The job's default enclave cluster, when it has no `tee:` block: SIMULATED, local.

`EmbeddedCluster.start` starts a cluster manager, one simulated enclave host admitted to it, the
measured service bundle and its first instances, in the calling process; `close` stops them all.
Whoever runs the job starts it, never a step, when the job has a `tee_upload` step and no `tee:`
block: the launcher (`runtime.launcher`) starts it in its own process before the parties, admits
the leader's control key (`Listening.tee_admin`) and hands the leader (the job's first party) its
address (`wire()`), which the leader's worker reaches as a `LaunchedCluster`; a node with no
launcher-started cluster (standalone, or under a platform worker) enters `embedded_cluster` around
the steps itself, as the in-process test harness does. Either way the leader's steps see it as
`ctx.tee_embedded` and it is stopped on every way out by whoever started it (no `atexit` hooks).

The host and CM here are as untrusted as ever: every party re-derives the MRENCLAVE it accepts
from its own build of the bundle and attests each instance itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sharelearn.algorithms.tee.service import build_bundle
from sharelearn.core.errors import ConfigError
from sharelearn.core.types import Wire
from sharelearn.tee.backend import EnclaveImage
from sharelearn.tee.control import ControlSigner
from sharelearn.tee.endpoint import call_endpoint
from sharelearn.tee.host import EnclaveHost
from sharelearn.tee.manager import ClusterManager

__all__ = ["EmbeddedCluster", "LaunchedCluster", "embedded_cluster", "needs_embedded"]

_IMAGE = "bundle"  # the name the service image is loaded under at the embedded host


@dataclass
class EmbeddedCluster:
    """A running local simulated cluster: its CM, its host and the loaded service image."""

    cm: ClusterManager
    host: EnclaveHost
    image: EnclaveImage

    @classmethod
    def start(cls, bundle_dir: Path, *, cluster: str, instances: int) -> EmbeddedCluster:
        """Start CM + host, build the service bundle under `bundle_dir`, launch `instances`."""
        cm = ClusterManager()
        host = EnclaveHost(cm=cm.endpoint)
        try:
            cm.admit_host(host.signer.public)
            bundle = build_bundle(
                bundle_dir.resolve(), cluster=cluster, simulation_root_der=host.platform.root_der
            )
            image = host.load(bundle, _IMAGE)
            for _ in range(instances):
                host.launch(image)
        except BaseException:
            host.close()
            cm.close()
            raise
        return cls(cm, host, image)

    @property
    def cm_endpoint(self) -> str:
        return self.cm.endpoint

    @property
    def root_der(self) -> bytes:
        """The simulation root the parties pin (SIMULATION evidence only)."""
        return self.host.platform.root_der

    def serve(self, blob: bytes, instances: int) -> int:
        """Scale out to `instances` (new instances get the keys by key sync), load `blob` on each."""
        live = [i for i in self.host.instances.values() if i.alive]
        for _ in range(instances - len(live)):
            self.host.launch(self.image)
        for inst in self.host.instances.values():
            if inst.alive:
                inst.call("load_model", blob)
        return sum(1 for i in self.host.instances.values() if i.alive)

    def wire(self) -> dict[str, str]:
        """Its address as the launcher hands it to the leader's worker (endpoints, root in hex)."""
        return {"cm": self.cm.endpoint, "host": self.host.endpoint, "root": self.root_der.hex()}

    def close(self) -> None:
        self.host.close()
        self.cm.close()


@dataclass(frozen=True)
class LaunchedCluster:
    """The embedded default a launcher started, as the leader's worker reaches it: over the CM
    and host endpoints, scaling out with control commands signed by the leader's admitted key."""

    cm_endpoint: str
    host_endpoint: str
    root_der: bytes
    signer: ControlSigner

    @classmethod
    def from_wire(cls, doc: object, signer: ControlSigner) -> LaunchedCluster:
        """Read `EmbeddedCluster.wire()` as the launcher sent it; ConfigError when malformed."""
        keys = ("cm", "host", "root")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in keys):
            raise ConfigError(f"the launcher's embedded TEE cluster address is malformed: {doc!r}")
        try:
            root = bytes.fromhex(doc["root"])
        except ValueError as exc:
            raise ConfigError(f"the launcher's embedded TEE cluster root is not hex: {exc}") from exc
        return cls(doc["cm"], doc["host"], root, signer)

    def _live(self) -> list[str]:
        info: Any = call_endpoint(self.host_endpoint, {"op": "info"})
        return [str(i["iid"]) for i in info["instances"] if i["alive"]]

    def serve(self, blob: bytes, instances: int) -> int:
        """Scale out to `instances` (signed `launch` commands), load `blob` on each live instance."""
        for _ in range(instances - len(self._live())):
            call_endpoint(
                self.host_endpoint, self.signer.sign(self.host_endpoint, {"op": "launch", "image": _IMAGE})
            )
        live = self._live()
        for iid in live:
            msg: dict[str, Wire] = {"op": "call", "instance": iid, "method": "load_model", "arg": blob}
            call_endpoint(self.host_endpoint, msg)
        return len(live)

    def close(self) -> None:
        """Nothing to stop here: the launcher that started the cluster stops it."""


def needs_embedded(steps: Sequence[tuple[str, Any]], tee_config: Any, *, leader: bool) -> Any | None:
    """The `tee_upload` parameters the embedded default starts from, or None when none is needed.

    Needed at the job's leader only, for a job with a `tee_upload` step and no `tee:` block.
    """
    if tee_config or not leader:
        return None
    return next((params for name, params in steps if name == "tee_upload"), None)


@contextlib.contextmanager
def embedded_cluster(
    workdir: Path, steps: Sequence[tuple[str, Any]], tee_config: Any, *, leader: bool
) -> Iterator[EmbeddedCluster | None]:
    """The embedded default for this party's run (None where it needs none), stopped on exit."""
    params = needs_embedded(steps, tee_config, leader=leader)
    if params is None:
        yield None
        return
    cluster = EmbeddedCluster.start(
        workdir / "tee" / "bundle", cluster=params.cluster, instances=params.instances
    )
    try:
        yield cluster
    finally:
        cluster.close()
