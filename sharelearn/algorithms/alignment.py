"""The `psi` step: align every data party's rows to the ids they all share.

Runs `operators.psi` with the first receiving guest (else the first receiver) as leader and every
other data party as a follower. Afterwards each receiving party's `ctx.data` holds only its common
rows, in the same order at every party. Parties without data (an arbiter) take no part.
"""

from __future__ import annotations

from typing import Any

from sharelearn.algorithms.context import StepContext, StepDef
from sharelearn.core.errors import ConfigError, DataError
from sharelearn.core.fileio import atomic_write_text
from sharelearn.operators.psi import PsiParams, PsiResult, psi_follower, psi_leader

__all__ = ["PSI_STEP", "run_psi"]


def _receivers(ctx: StepContext, params: PsiParams) -> list[str]:
    chosen = list(params.receivers) or list(ctx.data_parties)
    unknown = [p for p in chosen if p not in ctx.data_parties]
    if unknown:
        raise ConfigError(f"psi.receivers: {unknown} are not parties with data ({list(ctx.data_parties)})")
    return chosen


def _leader(ctx: StepContext, receivers: list[str]) -> str:
    guests = [p for p in receivers if ctx.roles[p] == "guest"]
    return (guests or receivers)[0]


def run_psi(ctx: StepContext, params: PsiParams) -> dict[str, Any]:
    """Run this party's role of PSI and align `ctx.data`; return the step's outputs."""
    if len(ctx.data_parties) < 2:
        raise ConfigError(f"psi needs at least two parties with data, the job has {list(ctx.data_parties)}")
    receivers = _receivers(ctx, params)
    leader = _leader(ctx, receivers)
    if ctx.data is None:
        return {}
    ctx.progress(f"hashing and blinding {len(ctx.data)} ids", {})
    result: PsiResult | None
    executor = ctx.executor
    if ctx.party == leader:
        followers = [p for p in ctx.data_parties if p != leader]
        result = psi_leader(
            ctx.link, ctx.data.ids, followers=followers, receivers=receivers, params=params, executor=executor
        )
    else:
        result = psi_follower(
            ctx.link,
            ctx.data.ids,
            leader=leader,
            receiver=ctx.party in receivers,
            params=params,
            executor=executor,
        )
    if result is None:
        ctx.aligned = False
        return {}
    if result.size == 0:
        raise DataError(
            f"psi: party {ctx.party!r} and the other data parties have no id in common; "
            "nothing to train or score"
        )
    ctx.data = ctx.data.take(result.rows)
    ctx.aligned = True
    atomic_write_text(ctx.workdir / "intersection_ids.csv", "id\n" + "".join(f"{i}\n" for i in ctx.data.ids))
    ctx.progress(f"intersection has {result.size} ids", {"intersection_size": result.size})
    return {"intersection_size": result.size}


PSI_STEP = StepDef(
    "psi",
    PsiParams,
    run_psi,
    "ECDH private set intersection; aligns rows to the common ids",
    handles_missing=True,  # ids only
)
