"""The job's default enclave cluster, when it has no `tee:` block: SIMULATED, local, one party's.

`EmbeddedCluster.start` starts a cluster manager, one simulated enclave host admitted to it, the
measured service bundle and its first instances, in the calling process; `close` stops them all.
Whoever runs the party (the worker, a test) owns it and closes it when the job ends - steps only
use it (no `atexit` hooks).

The host and CM here are as untrusted as ever: every party re-derives the MRENCLAVE it accepts
from its own build of the bundle and attests each instance itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sharelearn.algorithms.tee.service import build_bundle
from sharelearn.tee.backend import EnclaveImage
from sharelearn.tee.host import EnclaveHost
from sharelearn.tee.manager import ClusterManager

__all__ = ["EmbeddedCluster"]


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
            image = host.load(bundle)
            for _ in range(instances):
                host.launch(image)
        except BaseException:
            host.close()
            cm.close()
            raise
        return cls(cm, host, image)

    @property
    def root_der(self) -> bytes:
        """The simulation root the parties pin (SIMULATION evidence only)."""
        return self.host.platform.root_der

    def close(self) -> None:
        self.host.close()
        self.cm.close()
