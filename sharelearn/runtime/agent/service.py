"""`sharelearn worker`: one organisation's long-running worker.

It connects out to the coordinator and polls it (heartbeat): each answer says which jobs to start,
where their peers listen, which to stop, and which await this organisation's approval. Approvals
follow the local policy (or wait for `sharelearn approve`) and are signed with this party's key.
Events of a job are queued and sent in order before the next heartbeat, and kept while the
coordinator is unreachable: a coordinator restart loses nothing, and the worker reconnects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sharelearn.algorithms.registry import step_params
from sharelearn.core.errors import ConfigError, ProtocolError, SharelearnError
from sharelearn.core.fileio import atomic_write_text
from sharelearn.runtime.agent.client import CoordinatorClient
from sharelearn.runtime.agent.policy import Policy, load_policy
from sharelearn.runtime.agent.task import TaskRun
from sharelearn.runtime.coordinator.jobs import strip_coordinator_keys
from sharelearn.runtime.jobspec import parse_job

__all__ = ["Worker", "WorkerOptions", "enroll_worker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    coordinator: str
    party: str
    data_dir: Path
    certs: Path
    work_dir: Path
    policy: Path | None = None
    listen_host: str = "127.0.0.1"
    poll_s: float = 0.1


def enroll_worker(client: CoordinatorClient, party: str, certs: Path, token: str) -> None:
    """Have the coordinator sign this party's CSR (made here if missing); keep cert, CA and API token."""
    from sharelearn.runtime.enroll import request_certificate

    csr = certs / f"{party}.csr"
    if not (certs / f"{party}.key").is_file() or not csr.is_file():
        request_certificate(party, certs)
    got = client.call("POST", "/api/v1/enroll", json={"party": party, "token": token, "csr": csr.read_text()})
    atomic_write_text(certs / f"{party}.pem", got["cert"])
    atomic_write_text(certs / "ca.pem", got["ca"])
    atomic_write_text(certs / f"{party}.token", got["api_token"]).chmod(0o600)


class Worker:
    """The poll loop of one worker; `step()` is one round (tests drive it directly)."""

    def __init__(self, options: WorkerOptions) -> None:
        self.o = options
        token_file = options.certs / f"{options.party}.token"
        if not token_file.is_file():
            raise ConfigError(
                f"{token_file}: missing; enroll first (`sharelearn worker ... --enroll-token T`)"
            )
        self.client = CoordinatorClient(options.coordinator, token_file.read_text().strip())
        self.key_pem = (options.certs / f"{options.party}.key").read_bytes()
        self.policy: Policy = load_policy(options.policy)
        self.runs: dict[str, TaskRun] = {}
        self.asked: set[str] = set()
        self.connected = False

    def step(self) -> bool:
        """Send queued events, heartbeat, act on the answer, drop finished runs; True if it had work."""
        self._flush()
        reply = self.client.heartbeat([r.key for r in self.runs.values()])
        if not self.connected:
            log.info("%s: connected to %s", self.o.party, self.o.coordinator)
            self.connected = True
        fresh = any(str(a["job_id"]) not in self.asked for a in reply.get("approvals", []))
        for item in reply.get("approvals", []):
            self._consider(item)
        for assignment in reply.get("assign", []):
            self._start(assignment)
        for job_id, peers in reply.get("peers", {}).items():
            for run in self.runs.values():
                if run.job_id == job_id:
                    run.give_peers(peers)
        for key in reply.get("cancel", []):
            self._cancel(str(key))
        self._reap()
        return fresh or bool(reply.get("assign"))

    def _cancel(self, key: str) -> None:
        found = self.runs.get(key) or next((r for r in self.runs.values() if r.job_id == key), None)
        if found is not None:
            log.info("%s: stopping job %s", self.o.party, found.job_id)
            found.kill()
            found.drain()
            self.runs.pop(found.key, None)

    def _flush(self) -> None:
        for run in list(self.runs.values()):
            events = run.drain()
            if events:
                try:
                    self.client.report(run.job_id, run.attempt, events)
                except ProtocolError:
                    for e in events:  # keep them, in order, for the next round
                        run.outbox.put(e)
                    raise

    def _reap(self) -> None:
        for key, run in list(self.runs.items()):
            if run.finished.is_set() and run.outbox.empty():
                self._flush_one(run)
                self.runs.pop(key)

    def _flush_one(self, run: TaskRun) -> None:
        events = run.drain()
        if events:
            self.client.report(run.job_id, run.attempt, events)

    def _start(self, assignment: dict[str, Any]) -> None:
        run = TaskRun(
            assignment, self.o.party, self.o.data_dir, self.o.work_dir, self.o.certs, self.o.listen_host
        )
        log.info("%s: running job %s (attempt %d)", self.o.party, run.job_id, run.attempt)
        self.runs[run.key] = run

    def _consider(self, item: dict[str, Any]) -> None:
        job_id = str(item["job_id"])
        if job_id in self.asked:
            return
        self.asked.add(job_id)
        try:
            spec = parse_job(
                strip_coordinator_keys(item["spec"])[0], base_dir=self.o.data_dir, step_params=step_params()
            )
            decision = self.policy.decide(spec, self.o.party, str(item.get("submitter", "")))
        except ConfigError as exc:
            self.client.decide(item, self.o.party, self.key_pem, "reject", f"invalid job: {exc}")
            return
        if decision == "ask":
            pending = self.o.work_dir / "pending" / f"{job_id}.json"
            pending.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(pending, json.dumps(item))
            log.warning(
                "%s: job %s waits for approval: sharelearn approve %s --party %s",
                self.o.party,
                job_id,
                job_id,
                self.o.party,
            )
            return
        reason = "" if decision == "approve" else "refused by the default policy"
        self.client.decide(item, self.o.party, self.key_pem, decision, reason)

    def run_forever(self) -> int:
        backoff = self.o.poll_s
        try:
            while True:
                try:
                    if self.step():
                        continue  # act on the consequences at once (an approval queues, a job starts)
                    backoff = self.o.poll_s
                except ProtocolError as exc:
                    if self.connected:
                        log.warning("%s: lost the coordinator (%s); retrying", self.o.party, exc)
                    self.connected = False
                    backoff = min(2.0, backoff * 2)
                except SharelearnError as exc:
                    log.error("%s: %s", self.o.party, exc)
                time.sleep(backoff)
        finally:
            for run in self.runs.values():
                with contextlib.suppress(Exception):
                    run.kill()
