"""What the REST API shows of a job: its state, per-step x per-party task states, outputs, summary."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sharelearn.runtime.coordinator.models import Approval, Job, JobTransition, Task

__all__ = ["job_view"]


def job_view(s: Session, job: Job, *, brief: bool = False) -> dict[str, Any]:
    """A job as JSON; `brief` leaves out tasks, transitions, approvals and the summary."""
    out: dict[str, Any] = {
        "job_id": job.id,
        "name": job.name,
        "digest": job.digest,
        "state": job.state,
        "attempt": job.attempt,
        "retries": job.retries,
        "error": job.error,
        "submitter": job.submitter,
        "parties": json.loads(job.parties),
        "created": job.created,
        "updated": job.updated,
        "parent_id": job.parent_id,
        "from_step": job.from_step,
    }
    if brief:
        return out
    tasks = list(
        s.scalars(
            select(Task).where(Task.job_id == job.id, Task.attempt == job.attempt).order_by(Task.step_index)
        )
    )
    steps: dict[str, dict[str, Any]] = {}
    for t in tasks:
        steps.setdefault(f"{t.step_index}:{t.step}", {})[t.party] = {
            "state": t.state,
            "attempt": t.attempt,
            "error": t.error,
            "outputs": json.loads(t.outputs),
        }
    out["tasks"] = steps
    out["transitions"] = [
        {"old": r.old, "new": r.new, "attempt": r.attempt, "reason": r.reason, "at": r.at}
        for r in s.scalars(
            select(JobTransition).where(JobTransition.job_id == job.id).order_by(JobTransition.id)
        )
    ]
    out["approvals"] = [
        {"party": a.party, "decision": a.decision, "reason": a.reason, "at": a.at}
        for a in s.scalars(select(Approval).where(Approval.job_id == job.id))
    ]
    summary = json.loads(job.summary)
    out["summary"] = summary or None
    out["metrics"] = {
        step: {k: v for k, v in o.items() if isinstance(v, int | float) and k != "elapsed_s"}
        for step, o in (summary.get("steps") or {}).items()
    }
    return out
