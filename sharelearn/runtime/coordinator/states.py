"""The job and task state machines: every allowed transition is listed here and nowhere else.

job:  submitted -> awaiting_approval -> queued -> running -> succeeded | failed | cancelled
task: pending -> dispatched -> running -> succeeded | failed | cancelled   (with an attempt number)

A store refuses a transition that is not in these tables, so no code path can move a finished job
back to running or skip the approval gate.
"""

from __future__ import annotations

from enum import StrEnum

from sharelearn.core.errors import ConfigError

__all__ = [
    "FINAL_JOB_STATES",
    "FINAL_TASK_STATES",
    "JOB_TRANSITIONS",
    "TASK_TRANSITIONS",
    "JobState",
    "TaskState",
    "check_job_transition",
    "check_task_transition",
]


class JobState(StrEnum):
    SUBMITTED = "submitted"
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_J = JobState
_T = TaskState
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _J.SUBMITTED: frozenset({_J.AWAITING_APPROVAL, _J.FAILED, _J.CANCELLED}),
    _J.AWAITING_APPROVAL: frozenset({_J.QUEUED, _J.FAILED, _J.CANCELLED}),
    _J.QUEUED: frozenset({_J.RUNNING, _J.FAILED, _J.CANCELLED}),
    # running -> queued: a `retries: N` job whose attempt failed goes back to the queue.
    _J.RUNNING: frozenset({_J.SUCCEEDED, _J.FAILED, _J.CANCELLED, _J.QUEUED}),
    _J.SUCCEEDED: frozenset(),
    _J.FAILED: frozenset(),
    _J.CANCELLED: frozenset(),
}
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _T.PENDING: frozenset({_T.DISPATCHED, _T.CANCELLED, _T.FAILED}),
    _T.DISPATCHED: frozenset({_T.RUNNING, _T.SUCCEEDED, _T.FAILED, _T.CANCELLED}),
    _T.RUNNING: frozenset({_T.SUCCEEDED, _T.FAILED, _T.CANCELLED}),
    _T.SUCCEEDED: frozenset(),
    _T.FAILED: frozenset(),
    _T.CANCELLED: frozenset(),
}
FINAL_JOB_STATES = frozenset({_J.SUCCEEDED, _J.FAILED, _J.CANCELLED})
FINAL_TASK_STATES = frozenset({_T.SUCCEEDED, _T.FAILED, _T.CANCELLED})


def check_job_transition(job_id: str, old: str, new: str) -> None:
    """Raise `ConfigError` naming the job unless `old -> new` is in the job table."""
    if JobState(new) not in JOB_TRANSITIONS[JobState(old)]:
        raise ConfigError(f"job {job_id}: no transition {old} -> {new}")


def check_task_transition(task: str, old: str, new: str) -> None:
    """Raise `ConfigError` naming the task unless `old -> new` is in the task table."""
    if TaskState(new) not in TASK_TRANSITIONS[TaskState(old)]:
        raise ConfigError(f"task {task}: no transition {old} -> {new}")
