"""What each dashboard page shows, as JSON: the page renders exactly these objects.

Every function reads the coordinator's store only (states, outputs, metrics, events the workers
reported): no data, keys or intermediate values reach the coordinator, so none reach the pages.
"""

from __future__ import annotations

import functools
import json
import re
import time
from datetime import UTC
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from sharelearn.algorithms.registry import STEPS
from sharelearn.runtime.coordinator.auth import Caller
from sharelearn.runtime.coordinator.models import (
    Approval,
    Event,
    Job,
    ModelEntry,
    Party,
    Task,
    TaskTransition,
)
from sharelearn.runtime.coordinator.views import job_view

__all__ = [
    "METRICS",
    "REVEALS",
    "approvals_inbox",
    "fed_vs_central",
    "job_report",
    "job_rows",
    "log_tail",
    "model_rows",
    "party_rows",
    "redact",
    "wire_report",
]

METRICS = ("auc", "ks", "accuracy", "precision", "recall", "f1", "f1_macro", "logloss", "rmse", "mae", "r2")
# What each party learns by design, per step (the steps' documented outputs; see their docstrings).
REVEALS: dict[str, str] = {
    "psi": "every party learns the intersection size; guest and hosts learn which of their own ids intersect",
    "split": "nothing new: each party splits its own aligned rows with a common seed",
    "hetero_lr": "the arbiter decrypts the loss per epoch and the masked gradients; "
    "each party keeps its own weights",
    "secureboost": "the guest learns the best split per node (a host's feature and bin stay anonymous to it)",
    "fedavg": "the server learns the aggregate update per round (only the sum under secure aggregation); "
    "with DP, everyone learns the privacy budget spent",
    "ss_lr": "every party learns the revealed model and loss; shares stay secret",
    "evaluate": "the label holder learns the scores and the metrics; the others learn nothing new",
    "predict": "the label-holding side learns the scores",
    "cross_validate": "the label holder learns per-fold metrics",
}
_LEARNED = {
    "intersection_size": "intersection size",
    "final_loss": "decrypted training loss (last epoch)",
    "dp_epsilon": "differential-privacy budget spent (epsilon)",
    "epsilon": "differential-privacy budget spent (epsilon)",
    "rounds": "rounds completed",
    "dropouts": "clients that dropped out",
}
_PATH = re.compile(r"(?:/[\w.@+-]+)+/([\w.@+-]+)")
_PARTY = re.compile(r"\bparty (\w[\w-]*)")


def redact(message: str, limit: int = 240) -> str:
    """One line: folders cut from file paths (a file name stays), whitespace collapsed, capped."""
    line = " ".join(_PATH.sub(r"\1", message or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _steps_by_job(s: Session, ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, dict[int, str]] = {}
    rows = s.execute(
        select(Task.job_id, Task.step_index, Task.step)
        .where(Task.job_id.in_(ids), Task.attempt == 1)
        .distinct()
    )
    for job_id, index, step in rows:
        out.setdefault(job_id, {})[index] = step
    return {j: [steps[i] for i in sorted(steps)] for j, steps in out.items()}


def job_rows(s: Session, who: Caller, state: str = "", party: str = "", limit: int = 200) -> dict[str, Any]:
    """The newest `limit` jobs `who` may see, filtered by state and party; `total` counts all matches."""
    q = select(Job).order_by(Job.created.desc())
    if state:
        q = q.where(Job.state == state)
    jobs = [j for j in s.scalars(q) if who.may_see(j) and (not party or party in json.loads(j.parties))]
    shown = jobs[: max(1, limit)]
    steps = _steps_by_job(s, [j.id for j in shown])
    rows = [
        {
            **job_view(s, j, brief=True),
            "steps": steps.get(j.id, []),
            "duration_s": round(j.updated - j.created, 1),
        }
        for j in shown
    ]
    return {"total": len(jobs), "jobs": rows, "state": state, "party": party}


def _dag(s: Session, job: Job) -> dict[str, Any]:
    """Steps in order, each with every party's task state and attempt (the current attempt)."""
    parties = json.loads(job.parties)
    tasks = s.scalars(
        select(Task).where(Task.job_id == job.id, Task.attempt == job.attempt).order_by(Task.step_index)
    )
    steps: dict[int, dict[str, Any]] = {}
    for t in tasks:
        cell = {"state": t.state, "attempt": t.attempt, "error": redact(t.error)}
        steps.setdefault(t.step_index, {"index": t.step_index, "step": t.step, "parties": {}})["parties"][
            t.party
        ] = cell
    return {"parties": parties, "steps": [steps[i] for i in sorted(steps)]}


def _first_failure(s: Session, job: Job) -> dict[str, Any] | None:
    """Which party failed first (the earliest task that went to failed) and its one-line error."""
    if job.state != "failed" and not job.error:
        return None
    first = s.scalars(
        select(TaskTransition)
        .where(TaskTransition.job_id == job.id, TaskTransition.new == "failed")
        .order_by(TaskTransition.id)
    ).first()
    party = first.task_id.rsplit("/", 1)[-1] if first else ""
    if not party:
        m = _PARTY.search(job.error or "")
        party = m.group(1) if m else ""
    rejected = s.scalars(
        select(Approval).where(Approval.job_id == job.id, Approval.decision == "reject")
    ).first()
    if rejected is not None and not party:
        party = rejected.party
    return {"party": party, "error": redact(job.error or (first.reason if first else "")), "state": job.state}


def _step_outputs(s: Session, job: Job, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each step's merged outputs: the summary's, or (a job that did not finish) the tasks' own."""
    if summary.get("steps"):
        return dict(summary["steps"])
    out: dict[str, dict[str, Any]] = {}
    for t in s.scalars(select(Task).where(Task.job_id == job.id, Task.attempt == job.attempt)):
        for key, value in json.loads(t.outputs).items():
            out.setdefault(t.step, {}).setdefault(key, value)
    return out


def fed_vs_central(outputs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (step, metric): V_FED, V_SUM (the centralised reference, when the outputs carry
    one: `<metric>_centralized`) and |V_FED - V_SUM|. A coordinator never pools data, so V_SUM is
    only there when whoever may pool (a local `sharelearn run`) computed it."""
    rows = []
    for step, out in outputs.items():
        for metric in METRICS:
            fed = out.get(metric)
            if not isinstance(fed, int | float) or isinstance(fed, bool):
                continue
            central = out.get(f"{metric}_centralized")
            has = isinstance(central, int | float)
            rows.append(
                {
                    "step": step,
                    "metric": metric,
                    "v_fed": fed,
                    "v_sum": central if has else None,
                    "delta": round(abs(float(fed) - float(central)), 6) if has else None,  # type: ignore[arg-type]
                }
            )
    return rows


def job_report(s: Session, job: Job) -> dict[str, Any]:
    """The job page: the REST job view plus its DAG, first failure, metrics table and plot data."""
    view = job_view(s, job)
    outputs = _step_outputs(s, job, view.get("summary") or {})
    plots: dict[str, Any] = {"loss": {}, "roc": None, "importance": {}}
    for step, out in outputs.items():
        for name, values in (out.get("history") or {}).items():
            plots["loss"][f"{step}: {name}"] = values
        if isinstance(out.get("roc"), dict):
            plots["roc"] = {**out["roc"], "auc": out.get("auc"), "ks": out.get("ks"), "step": step}
        if isinstance(out.get("feature_importance"), dict):
            plots["importance"][step] = out["feature_importance"]
    return {
        **view,
        "dag": _dag(s, job),
        "failure": _first_failure(s, job),
        "outputs": {k: {m: v for m, v in o.items() if m != "parties"} for k, o in outputs.items()},
        "fed_vs_central": fed_vs_central(outputs),
        "plots": plots,
    }


def _pairs(s: Session, job: Job) -> list[dict[str, Any]]:
    pairs = []
    for e in s.scalars(select(Event).where(Event.job_id == job.id, Event.kind == "done").order_by(Event.id)):
        m = json.loads(e.metrics)
        if m.get("attempt") != job.attempt:
            continue
        for peer, st in sorted(((m.get("traffic") or {}).get("peers") or {}).items()):
            pairs.append(
                {
                    "from": e.party,
                    "to": peer,
                    "bytes": int(st.get("bytes_sent", 0)),
                    "messages": int(st.get("messages_sent", 0)),
                }
            )
    return pairs


def _learned(value: Any) -> str | None:
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return f"{len(value)} values, last {value[-1]}" if value else None
    if isinstance(value, str) and "/" not in value and len(value) < 80:
        return value
    return None


def _ledger(s: Session, job: Job) -> list[dict[str, Any]]:
    rows = []
    tasks = s.scalars(
        select(Task).where(Task.job_id == job.id, Task.attempt == job.attempt).order_by(Task.step_index)
    )
    for t in tasks:
        for key, value in json.loads(t.outputs).items():
            shown = _learned(value if key != "history" else value.get("loss", []))
            if key in ("elapsed_s", "seconds_per_tree", "resumed_from") or shown is None:
                continue
            rows.append({"party": t.party, "step": t.step, "item": _LEARNED.get(key, key), "value": shown})
    return rows


def wire_report(s: Session, job: Job) -> dict[str, Any]:
    """Bytes and messages between each pair of parties, and what each party learned by design."""
    summary = json.loads(job.summary)
    steps = [st["step"] for st in _dag(s, job)["steps"]]
    return {
        "job_id": job.id,
        "name": job.name,
        "state": job.state,
        "pairs": _pairs(s, job),
        "total_bytes": (summary.get("wire") or {}).get("bytes"),
        "ledger": _ledger(s, job),
        "by_design": {
            step: REVEALS.get(step, STEPS[step].summary if step in STEPS else "") for step in steps
        },
    }


def _what(job: Job) -> list[dict[str, Any]]:
    return _what_spec(job.spec)


@functools.lru_cache(maxsize=512)
def _what_spec(text: str) -> list[dict[str, Any]]:
    """What a job's steps compute and reveal (parsed once per job text)."""
    from sharelearn.runtime.coordinator.jobs import check_job

    spec = check_job(text).spec
    return [
        {
            "step": st.name,
            "computes": STEPS[st.name].summary if st.name in STEPS else st.name,
            "reveals": REVEALS.get(st.name, "see the step's documentation"),
            "params": {k: v for k, v in vars(st.params).items()} if hasattr(st.params, "__dict__") else {},
        }
        for st in spec.steps
    ]


def approvals_inbox(s: Session, who: Caller, party: str = "") -> list[dict[str, Any]]:
    """Jobs awaiting the approval of `party` (a party sees only its own inbox; the operator any)."""
    me = party if who.admin else who.name
    out = []
    for job in s.scalars(select(Job).where(Job.state == "awaiting_approval").order_by(Job.created)):
        for p in json.loads(job.data_parties):
            if (me and p != me) or s.scalars(
                select(Approval).where(Approval.job_id == job.id, Approval.party == p)
            ).first():
                continue
            out.append(
                {
                    "job_id": job.id,
                    "name": job.name,
                    "party": p,
                    "digest": job.digest,
                    "submitter": job.submitter,
                    "parties": json.loads(job.parties),
                    "created": job.created,
                    "steps": _what(job),
                }
            )
    return out


def model_rows(s: Session, who: Caller) -> list[dict[str, Any]]:
    """The registry with each model's metrics (its job's evaluate outputs) and its lineage job."""
    jobs = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(select(ModelEntry.job_id))))}
    rows = []
    for m in s.scalars(select(ModelEntry).order_by(ModelEntry.created.desc())):
        parties = json.loads(m.parties)
        if not (who.admin or who.name in parties):
            continue
        steps = json.loads(jobs[m.job_id].summary).get("steps", {}) if m.job_id in jobs else {}
        metrics = {k: v for o in steps.values() for k, v in o.items() if k in METRICS}
        rows.append(
            {
                "model_id": m.model_id,
                "version": m.version,
                "step": m.step,
                "job_id": m.job_id,
                "parties": parties,
                "lineage": json.loads(m.lineage),
                "metrics": metrics,
                "created": m.created,
            }
        )
    return rows


def _expiry(pem: str) -> float | None:
    if not pem:
        return None
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.not_valid_after_utc.replace(tzinfo=UTC).timestamp()


def _party(p: Party, now: float) -> dict[str, Any]:
    expires = _expiry(p.cert_pem)
    return {
        "party": p.name,
        "cert_expires": expires,
        "cert_days_left": None if expires is None else round((expires - now) / 86400, 1),
        "last_heartbeat": p.last_heartbeat,
        "heartbeat_age_s": round(now - p.last_heartbeat, 1) if p.last_heartbeat else None,
        "revoked": p.revoked,
        "serial": p.serial,
        "running": json.loads(p.running),
    }


def party_rows(s: Session) -> list[dict[str, Any]]:
    """Enrolled workers: certificate expiry, last heartbeat (and its age), what they run."""
    now = time.time()
    return [_party(p, now) for p in s.scalars(select(Party).order_by(Party.name))]


def log_tail(s: Session, job_id: str, party: str, limit: int = 200) -> list[dict[str, Any]]:
    """The last `limit` log and progress lines of one party, every attempt (each line names its own)."""
    q = (
        select(Event)
        .where(Event.job_id == job_id, Event.party == party)
        .order_by(Event.id.desc())
        .limit(max(1, limit))
    )
    rows = [
        {
            "id": e.id,
            "at": e.at,
            "attempt": json.loads(e.metrics).get("attempt"),
            "kind": e.kind,
            "step": e.step,
            "message": redact(e.message, 400),
        }
        for e in s.scalars(q)
    ]
    return rows[::-1]
