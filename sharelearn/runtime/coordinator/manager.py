"""The task manager: the coordinator's one scheduler of record, over the job store.

Every change of a job or a task goes through `_job_to` / `_task_to`, which check the transition
tables (`states`) and write one transition row. Workers drive the tasks with the control events of
`runtime.control` (listening, step_started, progress, step_done, done, error); the manager never
sees data, keys or intermediate values, only those records.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.runtime.coordinator.jobs import check_job
from sharelearn.runtime.coordinator.models import (
    Approval,
    Event,
    Job,
    JobTransition,
    Party,
    Task,
    TaskTransition,
)
from sharelearn.runtime.coordinator.states import (
    FINAL_JOB_STATES,
    FINAL_TASK_STATES,
    JobState,
    TaskState,
    check_job_transition,
    check_task_transition,
)
from sharelearn.runtime.enroll import verify_payload

__all__ = ["Manager"]

_J, _T = JobState, TaskState


class Manager:
    """Jobs, tasks, approvals and worker liveness; thread-safe (one lock around the store)."""

    def __init__(self, engine: Engine, *, heartbeat_timeout_s: float = 10.0) -> None:
        self.engine = engine
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.started = time.time()
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)  # notified on every job event (SSE)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._lock, Session(self.engine, expire_on_commit=False) as s:
            yield s
            s.commit()
            self.changed.notify_all()

    # ---- transitions -------------------------------------------------------------------------
    def _job_to(self, s: Session, job: Job, new: JobState, reason: str = "") -> None:
        check_job_transition(job.id, job.state, new)
        s.add(
            JobTransition(
                job_id=job.id, old=job.state, new=new, attempt=job.attempt, reason=reason, at=time.time()
            )
        )
        job.state, job.updated = new, time.time()

    def _task_to(self, s: Session, task: Task, new: TaskState, reason: str = "") -> None:
        check_task_transition(task.id, task.state, new)
        s.add(
            TaskTransition(
                task_id=task.id,
                job_id=task.job_id,
                old=task.state,
                new=new,
                attempt=task.attempt,
                reason=reason,
                at=time.time(),
            )
        )
        task.state = new

    def _tasks(self, s: Session, job: Job, party: str | None = None) -> list[Task]:
        q = select(Task).where(Task.job_id == job.id, Task.attempt == job.attempt)
        if party is not None:
            q = q.where(Task.party == party)
        return list(s.scalars(q.order_by(Task.step_index, Task.party)))

    def _make_tasks(self, s: Session, job: Job, steps: list[str]) -> None:
        for index, step in enumerate(steps):
            for party in json.loads(job.parties):
                task = Task(
                    id=f"{job.id}/{job.attempt}/{index}/{party}",
                    job_id=job.id,
                    step_index=index,
                    step=step,
                    party=party,
                    state=_T.PENDING,
                    attempt=job.attempt,
                )
                s.add(task)
                s.add(
                    TaskTransition(
                        task_id=task.id,
                        job_id=job.id,
                        old="",
                        new=_T.PENDING,
                        attempt=job.attempt,
                        reason="created",
                        at=time.time(),
                    )
                )

    # ---- submit / approve / cancel -----------------------------------------------------------
    def submit(self, text: str, submitter: str, *, parent: str = "", from_step: str = "") -> str:
        """Check and store a job; split it into tasks; it then waits for its data owners' approval."""
        sub = check_job(text)
        if from_step and from_step not in sub.steps:
            raise ConfigError(f"rerun: the job has no step {from_step!r} (steps: {', '.join(sub.steps)})")
        now = time.time()
        job = Job(
            id=secrets.token_hex(8),
            name=sub.spec.name,
            spec=text,
            digest=sub.digest,
            submitter=submitter,
            parties=json.dumps(sub.parties),
            data_parties=json.dumps(sub.data_parties),
            state=_J.SUBMITTED,
            attempt=1,
            retries=sub.retries,
            run_id=secrets.token_hex(16),
            created=now,
            updated=now,
            parent_id=parent,
            from_step=from_step,
        )
        with self.session() as s:
            s.add(job)
            s.add(
                JobTransition(
                    job_id=job.id, old="", new=_J.SUBMITTED, attempt=1, reason=f"by {submitter}", at=now
                )
            )
            s.flush()
            self._make_tasks(s, job, sub.steps)
            self._job_to(
                s, job, _J.AWAITING_APPROVAL, f"waiting for {', '.join(sub.data_parties) or 'nobody'}"
            )
            if not sub.data_parties:
                self._job_to(s, job, _J.QUEUED, "no data party to approve")
        return job.id

    def decide(self, job_id: str, party: str, payload: dict[str, Any], signature: str) -> str:
        """Store a worker's signed approval or rejection; return the job's state after it."""
        with self.session() as s:
            job = self._get(s, job_id)
            p = s.get(Party, party)
            if p is None or not p.cert_pem:
                raise CryptoError(f"approval of job {job_id} by {party!r}: that party is not enrolled")
            want = {"job_id": job_id, "digest": job.digest, "party": party}
            if any(payload.get(k) != v for k, v in want.items()) or payload.get("decision") not in (
                "approve",
                "reject",
            ):
                raise CryptoError(
                    f"approval of job {job_id} by {party!r}: it signs another job, digest or party"
                )
            verify_payload(p.cert_pem.encode(), payload, signature)
            if party not in json.loads(job.data_parties):
                raise ConfigError(f"job {job_id}: {party!r} holds no data in it and has nothing to approve")
            s.add(
                Approval(
                    job_id=job_id,
                    party=party,
                    decision=payload["decision"],
                    reason=str(payload.get("reason", "")),
                    payload=json.dumps(payload, sort_keys=True),
                    signature=signature,
                    at=time.time(),
                )
            )
            if job.state != _J.AWAITING_APPROVAL:
                return job.state
            if payload["decision"] == "reject":
                self._end(
                    s, job, _J.FAILED, f"rejected by {party}: {payload.get('reason') or 'no reason given'}"
                )
            elif self._approved(s, job):
                self._job_to(s, job, _J.QUEUED, "approved by every data party")
            return job.state

    def _approved(self, s: Session, job: Job) -> bool:
        rows = s.scalars(select(Approval).where(Approval.job_id == job.id, Approval.decision == "approve"))
        return set(json.loads(job.data_parties)) <= {a.party for a in rows}

    def cancel(self, job_id: str, by: str) -> str:
        with self.session() as s:
            job = self._get(s, job_id)
            if job.state not in FINAL_JOB_STATES:
                self._end(s, job, _J.CANCELLED, f"cancelled by {by}")
            return job.state

    def _get(self, s: Session, job_id: str) -> Job:
        job = s.get(Job, job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def _end(self, s: Session, job: Job, state: JobState, reason: str, culprit: str = "") -> None:
        """Finish a job: the culprit's open task fails, every other open task is cancelled."""
        for task in self._tasks(s, job):
            if task.state in FINAL_TASK_STATES:
                continue
            failed = task.party == culprit and task.state in (_T.RUNNING, _T.DISPATCHED)
            self._task_to(s, task, _T.FAILED if failed else _T.CANCELLED, reason)
            task.error = reason if failed else ""
        job.error = reason if state != _J.SUCCEEDED else ""
        if state == _J.FAILED and job.retries >= job.attempt and job.state == _J.RUNNING:
            self._job_to(s, job, _J.QUEUED, f"retry {job.attempt}/{job.retries} after: {reason}")
            job.attempt += 1
            self._make_tasks(s, job, _steps_of(s, job))
            return
        self._job_to(s, job, state, reason)


def _steps_of(s: Session, job: Job) -> list[str]:
    rows = s.scalars(select(Task).where(Task.job_id == job.id, Task.attempt == 1).order_by(Task.step_index))
    seen: dict[int, str] = {}
    for t in rows:
        seen.setdefault(t.step_index, t.step)
    return [seen[i] for i in sorted(seen)]


def _event_row(
    job_id: str, party: str, kind: str, step: str = "", message: str = "", metrics: Any = None
) -> Event:
    return Event(
        job_id=job_id,
        party=party,
        kind=kind,
        step=step,
        message=message,
        metrics=json.dumps(metrics or {}),
        at=time.time(),
    )
