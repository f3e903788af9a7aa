"""The coordinator's tables (SQLAlchemy). Nothing here holds data, keys or intermediate values.

A job row keeps the job YAML (party names, roles, file names and column names; never rows), the
summary the parties' outputs make, and its state. Each state change of a job or a task is one row of
a transition table. Parties keep a hash of their API token and their certificate (public).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Approval",
    "Base",
    "EnrollToken",
    "Event",
    "Job",
    "JobTransition",
    "ModelEntry",
    "Party",
    "Task",
    "TaskTransition",
]


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[str] = mapped_column(Text)  # the job YAML as submitted
    digest: Mapped[str] = mapped_column(String(64))
    submitter: Mapped[str] = mapped_column(String(64))
    parties: Mapped[str] = mapped_column(Text)  # JSON list of party names
    data_parties: Mapped[str] = mapped_column(Text)  # JSON list: the parties that must approve
    state: Mapped[str] = mapped_column(String(32), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str] = mapped_column(String(64))
    error: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    parent_id: Mapped[str] = mapped_column(String(32), default="")
    from_step: Mapped[str] = mapped_column(String(100), default="")
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # job/step_index/party
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    step_index: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(100))
    party: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    outputs: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    error: Mapped[str] = mapped_column(Text, default="")


class JobTransition(Base):
    __tablename__ = "job_transitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    old: Mapped[str] = mapped_column(String(32))
    new: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float)


class TaskTransition(Base):
    __tablename__ = "task_transitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    old: Mapped[str] = mapped_column(String(32))
    new: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float)


class Event(Base):
    """A log line or progress record a worker reported (status and metrics only)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    party: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[str] = mapped_column(String(100), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[str] = mapped_column(Text, default="{}")
    at: Mapped[float] = mapped_column(Float)


class Party(Base):
    __tablename__ = "parties"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), default="")
    cert_pem: Mapped[str] = mapped_column(Text, default="")
    serial: Mapped[str] = mapped_column(String(64), default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    last_heartbeat: Mapped[float] = mapped_column(Float, default=0.0)
    running: Mapped[str] = mapped_column(Text, default="[]")  # JSON: job ids it reports running
    enrolled: Mapped[float] = mapped_column(Float, default=0.0)


class EnrollToken(Base):
    __tablename__ = "enroll_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    party: Mapped[str] = mapped_column(String(64))
    expires: Mapped[float] = mapped_column(Float)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class Approval(Base):
    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    party: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    reason: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[str] = mapped_column(Text)  # the signed canonical JSON
    signature: Mapped[str] = mapped_column(Text)  # hex ECDSA signature by the party's key
    at: Mapped[float] = mapped_column(Float)


class ModelEntry(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(32))
    step: Mapped[str] = mapped_column(String(100))
    parties: Mapped[str] = mapped_column(Text)  # JSON list of the parties holding a part
    lineage: Mapped[str] = mapped_column(Text)  # JSON: job, step, data fingerprints
    created: Mapped[float] = mapped_column(Float)
