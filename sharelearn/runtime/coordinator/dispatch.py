"""The worker-facing half of the task manager: heartbeats, dispatch, events, liveness.

A worker connects out and polls: each heartbeat says which jobs it runs, and the answer carries
the jobs to start, the peers' data-plane addresses, the jobs to stop and the jobs awaiting its
approval. A worker that stops heartbeating while its tasks are open fails its job, naming it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sharelearn.runtime.control import PartyDone
from sharelearn.runtime.coordinator.jobs import check_job, model_id
from sharelearn.runtime.coordinator.manager import Manager, _event_row
from sharelearn.runtime.coordinator.models import Approval, Event, Job, ModelEntry, Party
from sharelearn.runtime.coordinator.states import FINAL_TASK_STATES, JobState, TaskState
from sharelearn.runtime.report import merge_step_outputs

__all__ = ["Dispatcher"]

_J, _T = JobState, TaskState
_OPEN = (_T.DISPATCHED, _T.RUNNING)


class Dispatcher(Manager):
    """`Manager` plus everything a worker's heartbeat and events drive."""

    def heartbeat(self, party: str, running: list[str]) -> dict[str, Any]:
        """Record that `party` is alive and runs `running`; answer what it must do next."""
        with self.session() as s:
            p = s.get(Party, party) or Party(name=party)
            p.last_heartbeat, p.running = time.time(), json.dumps(running)
            s.add(p)
            names = {r.split("#")[0] for r in running}
            self._lost_tasks(s, party, names)
            self._reconcile(s)
            self._schedule(s)
            return {
                "assign": self._assignments(s, party, names),
                "peers": self._peers(s, party),
                "cancel": self._to_cancel(s, running),
                "approvals": self._pending_approvals(s, party),
            }

    def reconcile(self) -> None:
        with self.session() as s:
            self._reconcile(s)
            self._schedule(s)

    def _running_jobs(self, s: Session, party: str | None = None) -> list[Job]:
        jobs = list(s.scalars(select(Job).where(Job.state == _J.RUNNING).order_by(Job.created)))
        return [j for j in jobs if party is None or party in json.loads(j.parties)]

    def _online(self, s: Session) -> set[str]:
        cutoff = time.time() - self.heartbeat_timeout_s
        return {p.name for p in s.scalars(select(Party)) if p.last_heartbeat >= cutoff and not p.revoked}

    def _schedule(self, s: Session) -> None:
        """Start queued jobs in submission order whose parties are all online and idle."""
        busy = {p for j in self._running_jobs(s) for p in json.loads(j.parties)}
        online = self._online(s)
        for job in s.scalars(select(Job).where(Job.state == _J.QUEUED).order_by(Job.created)):
            parties = set(json.loads(job.parties))
            if parties <= online and not parties & busy:
                self._job_to(s, job, _J.RUNNING, f"dispatched to {', '.join(sorted(parties))}")
                busy |= parties

    def _assignments(self, s: Session, party: str, running: set[str]) -> list[dict[str, Any]]:
        out = []
        crl = sorted(p.serial for p in s.scalars(select(Party).where(Party.revoked.is_(True))))
        for job in self._running_jobs(s, party):
            tasks = self._tasks(s, job, party)
            if job.id not in running and tasks and all(t.state == _T.PENDING for t in tasks):
                out.append(
                    {
                        "job_id": job.id,
                        "attempt": job.attempt,
                        "spec": job.spec,
                        "run_id": job.run_id,
                        "from_step": job.from_step,
                        "parent_id": job.parent_id,
                        "crl": crl,
                    }
                )
        return out

    def _peers(self, s: Session, party: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for job in self._running_jobs(s, party):
            rows = s.scalars(select(Event).where(Event.job_id == job.id, Event.kind == "listening"))
            addrs = {e.party: e.message for e in rows if json.loads(e.metrics).get("attempt") == job.attempt}
            if set(addrs) == set(json.loads(job.parties)):
                out[job.id] = addrs
        return out

    def _to_cancel(self, s: Session, running: list[str]) -> list[str]:
        out = []
        for job_id in running:
            job = s.get(Job, job_id.split("#")[0])
            attempt = int(job_id.split("#")[1]) if "#" in job_id else None
            if job is None or job.state != _J.RUNNING or (attempt is not None and attempt != job.attempt):
                out.append(job_id)
        return out

    def _pending_approvals(self, s: Session, party: str) -> list[dict[str, Any]]:
        out = []
        for job in s.scalars(select(Job).where(Job.state == _J.AWAITING_APPROVAL).order_by(Job.created)):
            if party not in json.loads(job.data_parties):
                continue
            if s.scalars(select(Approval).where(Approval.job_id == job.id, Approval.party == party)).first():
                continue
            out.append({"job_id": job.id, "digest": job.digest, "spec": job.spec, "submitter": job.submitter})
        return out

    def _lost_tasks(self, s: Session, party: str, running: set[str]) -> None:
        """A worker that no longer runs a job it had accepted lost it (it restarted, or its node died)."""
        names = running
        for job in self._running_jobs(s, party):
            tasks = self._tasks(s, job, party)
            if job.id not in names and any(t.state in _OPEN for t in tasks):
                self._end(
                    s,
                    job,
                    _J.FAILED,
                    f"party {party} lost the job (its worker restarted or its process died)",
                    party,
                )

    def _reconcile(self, s: Session) -> None:
        """Fail running jobs whose workers went silent (after a restart: once the grace has passed)."""
        now = time.time()
        if now - self.started < self.heartbeat_timeout_s:
            return
        for job in self._running_jobs(s):
            for party in json.loads(job.parties):
                p = s.get(Party, party)
                silent = now - (p.last_heartbeat if p else 0.0)
                if silent > self.heartbeat_timeout_s and any(
                    t.state not in FINAL_TASK_STATES for t in self._tasks(s, job, party)
                ):
                    self._end(
                        s,
                        job,
                        _J.FAILED,
                        f"party {party} lost: its worker sent no heartbeat for {silent:.1f} s",
                        party,
                    )
                    break

    # ---- events ------------------------------------------------------------------------------
    def report(self, party: str, job_id: str, attempt: int, events: list[dict[str, Any]]) -> None:
        """Apply a worker's control events for one attempt of a job (stale attempts are ignored)."""
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None or party not in json.loads(job.parties):
                raise KeyError(job_id)
            for ev in events:
                s.add(
                    _event_row(
                        job_id,
                        party,
                        str(ev.get("event", "")),
                        str(ev.get("step", "")),
                        _message(ev),
                        {**_metrics(ev), "attempt": attempt},
                    )
                )
                if job.state == _J.RUNNING and attempt == job.attempt:
                    self._apply(s, job, party, ev)

    def _apply(self, s: Session, job: Job, party: str, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        tasks = self._tasks(s, job, party)
        if kind == "accepted":
            for t in tasks:
                if t.state == _T.PENDING:
                    self._task_to(s, t, _T.DISPATCHED, f"accepted by {party}")
        elif kind in ("step_started", "step_done"):
            index = int(ev.get("index", -1))
            for t in tasks:
                if t.step_index == index and t.state not in FINAL_TASK_STATES:
                    if kind == "step_started" and t.state == _T.DISPATCHED:
                        self._task_to(s, t, _T.RUNNING)
                    elif kind == "step_done":
                        t.outputs = json.dumps(ev.get("outputs", {}))
                        self._task_to(s, t, _T.SUCCEEDED)
        elif kind == "error":
            self._end(s, job, _J.FAILED, f"party {party} failed: {ev.get('error', '')}", party)
        elif kind == "done":
            for t in tasks:
                if t.state not in FINAL_TASK_STATES:
                    self._task_to(s, t, _T.SUCCEEDED, "party finished")
            if all(t.state == _T.SUCCEEDED for t in self._tasks(s, job)):
                self._succeed(s, job)

    def _succeed(self, s: Session, job: Job) -> None:
        spec = check_job(job.spec).spec
        done = {}
        for e in s.scalars(select(Event).where(Event.job_id == job.id, Event.kind == "done")):
            m = json.loads(e.metrics)
            if m.get("attempt") == job.attempt:
                done[e.party] = PartyDone(
                    e.party, m.get("outputs", {}), m.get("traffic", {}), 0, m.get("max_rss_mb", 0.0)
                )
        job.summary = json.dumps(_summary(spec.name, job, spec, done))
        for index, step in enumerate(spec.steps):
            holders = [
                p
                for p, d in done.items()
                if isinstance(d.outputs.get(step.name), dict) and "model" in d.outputs[step.name]
            ]
            if holders:
                s.add(
                    ModelEntry(
                        model_id=model_id(job.run_id, index, step.name),
                        version=1,
                        job_id=job.id,
                        step=step.name,
                        parties=json.dumps(sorted(holders)),
                        created=time.time(),
                        lineage=json.dumps(
                            {
                                "job": job.id,
                                "job_name": job.name,
                                "step": step.name,
                                "step_index": index,
                                "run_id": job.run_id,
                                "job_digest": job.digest,
                                "parent_job": job.parent_id,
                            }
                        ),
                    )
                )
        self._job_to(s, job, _J.SUCCEEDED, "every party finished")


def _message(ev: dict[str, Any]) -> str:
    if ev.get("event") == "listening":
        return str(ev.get("address", ""))
    return str(ev.get("message") or ev.get("error") or ev.get("line") or "")


def _metrics(ev: dict[str, Any]) -> dict[str, Any]:
    kind = ev.get("event")
    if kind == "done":
        return {k: ev.get(k) for k in ("outputs", "traffic", "max_rss_mb")}
    if kind == "progress":
        return dict(ev.get("metrics") or {})
    if kind == "step_done":
        return {"outputs": ev.get("outputs", {})}
    return {}


def _summary(name: str, job: Job, spec: Any, done: dict[str, PartyDone]) -> dict[str, Any]:
    """The `sharelearn run --json` object, as far as a coordinator can know it (no data: no leak audit)."""
    parties = {}
    for pname, pspec in spec.parties.items():
        d = done.get(pname)
        traffic = d.traffic if d else {}
        parties[pname] = {
            "role": pspec.role,
            "pid": 0,
            "bytes_sent": int(traffic.get("bytes_sent", 0)),
            "bytes_received": int(traffic.get("bytes_received", 0)),
            "messages": int(traffic.get("messages_sent", 0)),
            "max_rss_mb": round(float(d.max_rss_mb if d else 0.0), 1),
        }
    return {
        "job": name,
        "status": "success",
        "error": None,
        "elapsed_s": round(job.updated - job.created, 4),
        "report_dir": "",
        "steps": merge_step_outputs(spec, done),
        "plots": [],
        "parties": parties,
        "wire": {
            "bytes": sum(p["bytes_sent"] for p in parties.values()),
            "messages": sum(p["messages"] for p in parties.values()),
            "leaks": None,
        },  # the leak audit needs every party's ids: only a local run can make it
    }
