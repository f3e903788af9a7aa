"""The job's default enclave cluster, when it has no `tee:` block: SIMULATED, local, one party's.

`EmbeddedCluster.start` starts a cluster manager, one simulated enclave host admitted to it, the
measured service bundle and its first instances, in the calling process; `close` stops them all.
The party's runner starts it, never a step: `sharelearn node` (under the launcher or standalone)
enters `embedded_cluster` around the steps at the job's leader (its first party) when the job has a
`tee_upload` step and no `tee:` block, hands it to the steps as `ctx.tee_embedded`, and stops it on
every way out of the `with` (no `atexit` hooks). The in-process test harness starts it the same way.

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
from sharelearn.tee.backend import EnclaveImage
from sharelearn.tee.host import EnclaveHost
from sharelearn.tee.manager import ClusterManager

__all__ = ["EmbeddedCluster", "embedded_cluster", "needs_embedded"]


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
