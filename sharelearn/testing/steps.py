"""run_steps(): run a job's steps for every party in-process over the in-memory link.

The same `run_party_steps` and `StepContext` a worker uses (one scoped link per step, the same
context across steps), without processes, certificates or files other than each party's workdir:
the unit-test route for every algorithm. The integration route is the launcher (`interfaces.api.run_job`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.algorithms.context import Dataset, Engine, PartyIdentity, StepContext, TrainedModel
from sharelearn.algorithms.horizontal.identity import ephemeral_identities
from sharelearn.algorithms.runner import run_party_steps
from sharelearn.algorithms.tee.embedded import EmbeddedCluster, needs_embedded
from sharelearn.core.audit import WireAudit
from sharelearn.core.link import Link
from sharelearn.runtime.data import PartyData, read_party_data
from sharelearn.runtime.jobspec import DataSpec
from sharelearn.testing.roles import run_roles

__all__ = ["PartyRun", "StepsRun", "dataset", "load_csv", "run_steps"]


@dataclass
class PartyRun:
    """One party's outputs per step and the context the steps left behind (its model, its data)."""

    outputs: dict[str, dict[str, Any]]
    context: StepContext

    @property
    def model(self) -> TrainedModel | None:
        return self.context.model

    @property
    def data(self) -> Dataset | None:
        return self.context.data


@dataclass
class StepsRun:
    parties: dict[str, PartyRun]
    audit: WireAudit
    stats: dict[str, dict[str, int]] = field(default_factory=dict)


def dataset(ids: Sequence[Any], x: np.ndarray, y: np.ndarray | None = None, name: str = "test") -> PartyData:
    """A party table from arrays (ids become strings)."""
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs.reshape(-1, 1)
    return PartyData(
        np.asarray([str(i) for i in ids], dtype=object),
        xs,
        None if y is None else np.asarray(y, dtype=np.float64),
        tuple(f"x{k}" for k in range(xs.shape[1])),
        Path(name),
    )


def load_csv(path: Path | str, *, id: str = "id", label: str | None = None) -> PartyData:
    """Read a CSV the way a party would (e.g. one of ../shared/datasets/fate)."""
    return read_party_data(DataSpec(Path(path), id=id, label=label))


def _embedded(folder: Path, steps: Sequence[tuple[str, Any]], *, leader: bool) -> EmbeddedCluster | None:
    params = needs_embedded(steps, None, leader=leader)
    if params is None:
        return None
    return EmbeddedCluster.start(
        folder / "tee" / "bundle", cluster=params.cluster, instances=params.instances
    )


def _run_closing_on_error(ctx: StepContext, link: Link, steps: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    try:
        return run_party_steps(ctx, link, steps)
    except BaseException:
        if ctx.tee_embedded is not None:
            ctx.tee_embedded.close()
        raise


def run_steps(
    parties: Mapping[str, tuple[str, Dataset | None]],
    steps: Sequence[tuple[str, Any]],
    workdir: Path,
    *,
    timeout: float = 120.0,
    models: Mapping[str, TrainedModel] | None = None,
    engine: Engine = "federated",
    aligned: bool = False,
) -> StepsRun:
    """Run `steps` ((name, params) in order) for every party of `parties` (name -> (role, data)).

    Each party's workdir is `workdir/<party>`; `models` gives a party a model to start from (e.g.
    one loaded from its file, for a `predict`-only run). `aligned=True` declares that the tables
    already hold the same people in the same order (as if `psi` had run): vertical steps then pair
    rows by position. A TEE run (`engine="tee"`) starts the embedded default cluster at the first
    party, as the worker does, but leaves it running on success so a test can question it: the
    caller stops it (`run.parties[first].context.tee_embedded.close()`). Raises PartyFailed
    naming the first party that failed, as `run_roles` does.
    """
    roles = {p: role for p, (role, _) in parties.items()}
    data_parties = [p for p, (_, d) in parties.items() if d is not None]
    run_id = secrets.token_hex(16)
    # A throwaway CA, as the launcher mints one: protocols that sign (secure aggregation) need it.
    ids = {
        p: PartyIdentity(p, i.ca_pem, i.cert_pem, i.key_pem)
        for p, i in ephemeral_identities(list(parties)).items()
    }

    def role_fn(party: str) -> Any:
        def body(link: Link) -> PartyRun:
            folder = workdir / party
            folder.mkdir(parents=True, exist_ok=True)
            ctx = StepContext(
                link=link,
                party=party,
                roles=roles,
                data=parties[party][1],
                data_parties=data_parties,
                workdir=folder,
                job_dir=workdir,
                job=workdir.name,
                run_id=run_id,
                engine=engine,
                model=(models or {}).get(party),
                aligned=aligned,
                identity=ids[party],
            )
            if engine == "tee":  # as the worker does: the leader's runner starts the embedded default
                ctx.tee_embedded = _embedded(folder, steps, leader=party == next(iter(parties)))
            results = _run_closing_on_error(ctx, link, steps)
            return PartyRun({name: r.outputs for name, r in results.items()}, ctx)

        return body

    result = run_roles({p: role_fn(p) for p in parties}, timeout=timeout, audit=WireAudit())
    return StepsRun({p: result[p] for p in parties}, result.audit, result.stats)
