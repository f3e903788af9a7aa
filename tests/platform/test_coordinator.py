"""The coordinator in-process (FastAPI TestClient): state machines, approvals, enrollment, faults."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from fastapi.testclient import TestClient
from harness import DEMO_JOB

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.runtime.agent.client import decision_payload
from sharelearn.runtime.coordinator import CoordinatorOptions, open_coordinator
from sharelearn.runtime.coordinator.api import make_app
from sharelearn.runtime.coordinator.dispatch import Dispatcher
from sharelearn.runtime.coordinator.states import JOB_TRANSITIONS, TASK_TRANSITIONS, JobState, TaskState
from sharelearn.runtime.enroll import (
    check_certificate,
    make_ca,
    request_certificate,
    sign_payload,
    sign_request,
)

JOB = DEMO_JOB % {"epochs": 1}
PARTIES = ("bank", "shop", "coord")


@dataclass
class Coord:
    http: TestClient
    dispatcher: Dispatcher
    admin: dict[str, str]
    root: Path
    tokens: dict[str, dict[str, str]]
    keys: dict[str, bytes]

    def enroll(self, party: str) -> None:
        _, identity = self.dispatcher, self.http.app.state.identity  # type: ignore[attr-defined]
        csr = request_certificate(party, self.root / party)
        got = self.http.post(
            "/api/v1/enroll",
            json={"party": party, "token": identity.enrollment_token(party), "csr": csr.read_text()},
        )
        assert got.status_code == 200, got.text
        self.tokens[party] = {"Authorization": f"Bearer {got.json()['api_token']}"}
        self.keys[party] = (self.root / party / f"{party}.key").read_bytes()

    def beat(self, party: str, running: list[str] | None = None) -> dict:
        r = self.http.post(
            "/api/v1/agent/heartbeat", json={"running": running or []}, headers=self.tokens[party]
        )
        assert r.status_code == 200, r.text
        return r.json()

    def decide(
        self, job_id: str, party: str, decision: str, reason: str = "", key: bytes | None = None
    ) -> int:
        job = self.http.get(f"/api/v1/jobs/{job_id}", headers=self.admin).json()
        payload = decision_payload(job, party, decision, reason)
        body = {"payload": payload, "signature": sign_payload(key or self.keys[party], payload)}
        return self.http.post(
            f"/api/v1/jobs/{job_id}/{decision}", json=body, headers=self.tokens[party]
        ).status_code

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/api/v1/jobs/{job_id}", headers=self.admin).json()

    def submit(self, text: str = JOB) -> str:
        r = self.http.post("/api/v1/jobs", content=text, headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()["job_id"]


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coord]:
    dispatcher, identity = open_coordinator(CoordinatorOptions(tmp_path / "state", heartbeat_timeout_s=2.0))
    app = make_app(dispatcher, identity)
    app.state.identity = identity
    admin = {"Authorization": f"Bearer {(tmp_path / 'state' / 'admin.token').read_text().strip()}"}
    with TestClient(app) as http:
        c = Coord(http, dispatcher, admin, tmp_path, {}, {})
        for p in PARTIES:
            c.enroll(p)
        yield c


def test_state_tables_are_exactly_the_issue_states() -> None:
    assert [s.value for s in JobState] == [
        "submitted",
        "awaiting_approval",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert [s.value for s in TaskState] == [
        "pending",
        "dispatched",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert all(not JOB_TRANSITIONS[s] for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED))
    assert JobState.RUNNING not in JOB_TRANSITIONS[JobState.AWAITING_APPROVAL]  # no way round the approval
    assert TaskState.PENDING not in TASK_TRANSITIONS[TaskState.RUNNING]


def test_unapproved_and_rejected_jobs_never_start(coord: Coord) -> None:
    waiting, rejected = coord.submit(), coord.submit()
    assert coord.decide(waiting, "bank", "approve") == 200  # shop never answers
    assert coord.decide(rejected, "shop", "reject", "not this quarter") == 200
    for _ in range(3):
        for p in PARTIES:
            assert coord.beat(p)["assign"] == []
    assert coord.job(waiting)["state"] == "awaiting_approval"
    job = coord.job(rejected)
    assert job["state"] == "failed" and job["error"] == "rejected by shop: not this quarter"
    assert "running" not in [t["new"] for t in job["transitions"]]
    assert {t["state"] for step in job["tasks"].values() for t in step.values()} == {"cancelled"}


def test_forged_or_misdirected_approvals_are_refused(coord: Coord) -> None:
    job_id = coord.submit()
    assert coord.decide(job_id, "bank", "approve", key=coord.keys["shop"]) == 403  # shop's key, bank's name
    job = coord.job(job_id)
    payload = {**decision_payload(job, "bank", "approve"), "digest": "0" * 64}
    body = {"payload": payload, "signature": sign_payload(coord.keys["bank"], payload)}
    assert (
        coord.http.post(f"/api/v1/jobs/{job_id}/approve", json=body, headers=coord.tokens["bank"]).status_code
        == 403
    )
    assert coord.decide(job_id, "coord", "approve") == 400  # the arbiter holds no data: nothing to approve
    assert (
        coord.http.post(f"/api/v1/jobs/{job_id}/approve", json=body, headers=coord.admin).status_code == 403
    )
    assert coord.job(job_id)["approvals"] == []


def _run(coord: Coord, text: str = JOB) -> str:
    job_id = coord.submit(text)
    for p in ("bank", "shop"):
        assert coord.decide(job_id, p, "approve") == 200
    for p in PARTIES:
        coord.beat(p)
    assert coord.job(job_id)["state"] == "running"
    for p in PARTIES:
        [a] = coord.beat(p)["assign"]
        assert a["job_id"] == job_id and "data" not in a
        _report(coord, p, job_id, a["attempt"], [{"event": "accepted"}])
    return job_id


def _report(coord: Coord, party: str, job_id: str, attempt: int, events: list[dict]) -> None:
    r = coord.http.post(
        "/api/v1/agent/events",
        json={"job_id": job_id, "attempt": attempt, "events": events},
        headers=coord.tokens[party],
    )
    assert r.status_code == 200, r.text


def test_worker_silence_fails_the_job_naming_it_and_cancels_the_others(coord: Coord) -> None:
    job_id = _run(coord)
    _report(coord, "bank", job_id, 1, [{"event": "step_started", "step": "psi", "index": 0}])
    coord.dispatcher.started -= 10  # past the restart grace
    deadline = time.monotonic() + 20
    while coord.job(job_id)["state"] == "running" and time.monotonic() < deadline:
        coord.beat("bank", [f"{job_id}#1"])
        coord.beat("coord", [f"{job_id}#1"])  # shop has gone silent
        time.sleep(0.1)
    job = coord.job(job_id)
    assert job["state"] == "failed" and job["error"].startswith("party shop lost")
    assert coord.beat("bank", [f"{job_id}#1"])["cancel"] == [f"{job_id}#1"]
    psi = job["tasks"]["0:psi"]
    assert (psi["bank"]["state"], psi["shop"]["state"], psi["coord"]["state"]) == (
        "cancelled",
        "failed",
        "cancelled",
    )


def test_party_error_fails_naming_it_and_retries_rerun_the_job(coord: Coord) -> None:
    job_id = _run(coord, "retries: 1\n" + JOB)
    _report(coord, "shop", job_id, 1, [{"event": "error", "error": "DataError: shop.csv: column x3 is text"}])
    job = coord.job(job_id)
    assert (job["state"], job["attempt"]) == ("queued", 2)
    for p in PARTIES:
        coord.beat(p)
    assert [a["attempt"] for a in coord.beat("bank")["assign"]] == [2]
    _report(
        coord, "bank", job_id, 2, [{"event": "accepted"}, {"event": "error", "error": "ProtocolError: boom"}]
    )
    job = coord.job(job_id)
    assert job["state"] == "failed" and job["error"] == "party bank failed: ProtocolError: boom"
    assert [t["new"] for t in job["transitions"]].count("queued") == 2


def test_cancel_stops_the_workers(coord: Coord) -> None:
    job_id = _run(coord)
    r = coord.http.post(f"/api/v1/jobs/{job_id}/cancel", headers=coord.tokens["shop"])
    assert r.json()["state"] == "cancelled"
    assert coord.beat("bank", [f"{job_id}#1"])["cancel"] == [f"{job_id}#1"]
    _report(coord, "bank", job_id, 1, [{"event": "done", "outputs": {}, "traffic": {}}])  # late: ignored
    assert coord.job(job_id)["state"] == "cancelled"


def test_a_party_sees_only_its_jobs(coord: Coord) -> None:
    coord.enroll("outsider")
    job_id = coord.submit()
    assert coord.http.get(f"/api/v1/jobs/{job_id}", headers=coord.tokens["outsider"]).status_code == 404
    assert coord.http.get("/api/v1/jobs", headers=coord.tokens["outsider"]).json() == []
    assert [j["job_id"] for j in coord.http.get("/api/v1/jobs", headers=coord.tokens["shop"]).json()] == [
        job_id
    ]
    assert coord.http.post("/api/v1/jobs", content=JOB, headers=coord.tokens["outsider"]).status_code == 400
    assert coord.http.get("/api/v1/jobs").status_code == 401
    assert "/api/v1/jobs/{job_id}/rerun" in coord.http.get("/openapi.json").json()["paths"]


def test_enrollment_tokens_are_one_time_and_per_party(coord: Coord, tmp_path: Path) -> None:
    identity = coord.http.app.state.identity  # type: ignore[attr-defined]
    token = identity.enrollment_token("mallory")
    csr = request_certificate("bank", tmp_path / "m").read_text()
    assert (
        coord.http.post("/api/v1/enroll", json={"party": "bank", "token": token, "csr": csr}).status_code
        == 403
    )
    csr = request_certificate("mallory", tmp_path / "m").read_text()
    assert (
        coord.http.post("/api/v1/enroll", json={"party": "mallory", "token": token, "csr": csr}).status_code
        == 200
    )
    assert (
        coord.http.post("/api/v1/enroll", json={"party": "mallory", "token": token, "csr": csr}).status_code
        == 403
    )
    expired = identity.enrollment_token("late", ttl_s=-1)
    csr = request_certificate("late", tmp_path / "l").read_text()
    assert (
        coord.http.post("/api/v1/enroll", json={"party": "late", "token": expired, "csr": csr}).status_code
        == 403
    )


def test_revoked_party_is_refused_on_the_control_plane(coord: Coord) -> None:
    serial = coord.http.post("/api/v1/parties/shop/revoke", headers=coord.admin).json()["revoked_serial"]
    assert coord.http.get("/api/v1/crl").json() == {"revoked_serials": [serial]}
    r = coord.http.post("/api/v1/agent/heartbeat", json={"running": []}, headers=coord.tokens["shop"])
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert coord.http.post("/api/v1/parties/bank/revoke", headers=coord.tokens["shop"]).status_code == 401


def test_tasks_carry_the_revocation_list_for_the_data_plane(coord: Coord) -> None:
    """A revoked party still known to peers is refused on their gRPC links: each task brings the CRL."""
    coord.enroll("mallory")
    serial = coord.http.post("/api/v1/parties/mallory/revoke", headers=coord.admin).json()["revoked_serial"]
    job_id = coord.submit()
    for p in ("bank", "shop"):
        assert coord.decide(job_id, p, "approve") == 200
    for p in PARTIES:
        coord.beat(p)
    for p in PARTIES:
        [a] = coord.beat(p)["assign"]
        assert a["job_id"] == job_id and a["crl"] == [serial]


def _cert(csr_dir: Path, ca_dir: Path, party: str, days: float) -> bytes:
    return sign_request(request_certificate(party, csr_dir).read_bytes(), ca_dir, party=party, days=days)


def test_certificate_check_refuses_other_ca_expired_and_revoked(tmp_path: Path) -> None:
    ca, other = make_ca(tmp_path / "ca"), make_ca(tmp_path / "other")
    ca_pem = (ca / "ca.pem").read_bytes()
    good = _cert(tmp_path / "p", ca, "bank", 30)
    assert check_certificate(good, ca_pem, party="bank") == "bank"
    with pytest.raises(CryptoError, match="not issued by this federation's CA"):
        check_certificate(_cert(tmp_path / "q", other, "bank", 30), ca_pem)
    with pytest.raises(CryptoError, match="expired"):
        check_certificate(_cert(tmp_path / "r", ca, "bank", -1), ca_pem)
    serial = format(x509.load_pem_x509_certificate(good).serial_number, "x")
    with pytest.raises(CryptoError, match="revoked"):
        check_certificate(good, ca_pem, revoked=[serial])
    with pytest.raises(CryptoError, match="not 'shop'"):
        check_certificate(good, ca_pem, party="shop")
    with pytest.raises(ConfigError, match="names party 'bank'"):
        sign_request(request_certificate("bank", tmp_path / "s").read_bytes(), ca, party="shop")
    cert = x509.load_pem_x509_certificate(good)
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=31)
    assert not list((tmp_path / "p").glob("ca.key"))  # the CA key never lands in a party's folder
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
