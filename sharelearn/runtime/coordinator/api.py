"""The coordinator's REST API (`/api/v1`, OpenAPI at `/openapi.json`) and the worker endpoints.

Operators and parties call it with a bearer token; a party sees only the jobs it takes part in.
Responses carry states, progress, metrics and logs — never data, keys or intermediate values.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.runtime.coordinator.auth import Caller, Identity
from sharelearn.runtime.coordinator.dispatch import Dispatcher
from sharelearn.runtime.coordinator.models import Event, Job, ModelEntry, Party
from sharelearn.runtime.coordinator.states import FINAL_JOB_STATES
from sharelearn.runtime.coordinator.views import job_view

__all__ = ["Decision", "Enroll", "Heartbeat", "Report", "Rerun", "make_app", "submit_as"]


class Decision(BaseModel):
    payload: dict[str, Any]
    signature: str


class Rerun(BaseModel):
    from_step: str = ""


class Enroll(BaseModel):
    party: str
    token: str
    csr: str


class Heartbeat(BaseModel):
    running: list[str] = []


class Report(BaseModel):
    job_id: str
    attempt: int
    events: list[dict[str, Any]]


@dataclass(frozen=True)
class _Deps:
    """What every router needs: the dispatcher, the identity store and the caller dependencies."""

    dispatcher: Dispatcher
    identity: Identity
    caller: Callable[..., Caller]
    party_only: Callable[..., Caller]

    def visible(self, job_id: str, who: Caller) -> Job:
        """The job, if `who` takes part in it (or is the operator); else 404."""
        with self.dispatcher.session() as s:
            job = s.get(Job, job_id)
            if job is None or not who.may_see(job):
                raise HTTPException(404, f"no job {job_id}")
            return job


def _deps(dispatcher: Dispatcher, identity: Identity) -> _Deps:
    def caller(authorization: Annotated[str | None, Header()] = None) -> Caller:
        token = (authorization or "").removeprefix("Bearer ").strip()
        try:
            return identity.caller(token)
        except PermissionError as exc:
            raise HTTPException(401, str(exc)) from exc

    def party_only(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.admin:
            raise HTTPException(403, "this endpoint is for enrolled workers")
        return who

    return _Deps(dispatcher, identity, caller, party_only)


def make_app(dispatcher: Dispatcher, identity: Identity) -> FastAPI:
    """The ASGI app of one coordinator."""
    app = FastAPI(title="sharelearn coordinator", version="1", openapi_url="/openapi.json")
    d = _deps(dispatcher, identity)

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(CryptoError)
    async def _crypto(_: Request, exc: CryptoError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for router in (_jobs_read(d), _jobs_write(d), _decisions(d), _registry(d), _agent(d)):
        app.include_router(router)
    return app


def _jobs_read(d: _Deps) -> APIRouter:
    """Job listing, one job, its logs and its server-sent events."""
    r = APIRouter(prefix="/api/v1/jobs")

    @r.get("")
    def jobs(who: Annotated[Caller, Depends(d.caller)], state: str | None = None) -> list[dict[str, Any]]:
        with d.dispatcher.session() as s:
            rows = s.scalars(select(Job).order_by(Job.created))
            return [
                job_view(s, j, brief=True)
                for j in rows
                if who.may_see(j) and (state is None or j.state == state)
            ]

    @r.get("/{job_id}")
    def job(job_id: str, who: Annotated[Caller, Depends(d.caller)]) -> dict[str, Any]:
        d.visible(job_id, who)
        with d.dispatcher.session() as s:
            return job_view(s, s.get(Job, job_id))  # type: ignore[arg-type]

    @r.get("/{job_id}/logs")
    def logs(
        job_id: str, who: Annotated[Caller, Depends(d.caller)], party: str | None = None, after: int = 0
    ) -> list[dict[str, Any]]:
        d.visible(job_id, who)
        return _events(d.dispatcher, job_id, party, after)

    @r.get("/{job_id}/events")
    async def events(job_id: str, who: Annotated[Caller, Depends(d.caller)]) -> StreamingResponse:
        d.visible(job_id, who)
        return StreamingResponse(_sse(d.dispatcher, job_id), media_type="text/event-stream")

    return r


def _jobs_write(d: _Deps) -> APIRouter:
    """Submit, cancel and rerun."""
    r = APIRouter(prefix="/api/v1/jobs")

    @r.post("")
    async def submit(request: Request, who: Annotated[Caller, Depends(d.caller)]) -> dict[str, str]:
        text = (await request.body()).decode("utf-8", errors="replace")
        return {"job_id": await asyncio.to_thread(_submit, d.dispatcher, text, who)}

    @r.post("/{job_id}/cancel")
    def cancel(job_id: str, who: Annotated[Caller, Depends(d.caller)]) -> dict[str, str]:
        d.visible(job_id, who)
        return {"job_id": job_id, "state": d.dispatcher.cancel(job_id, who.name)}

    @r.post("/{job_id}/rerun")
    def rerun(job_id: str, body: Rerun, who: Annotated[Caller, Depends(d.caller)]) -> dict[str, str]:
        old = d.visible(job_id, who)
        return {"job_id": d.dispatcher.submit(old.spec, who.name, parent=job_id, from_step=body.from_step)}

    return r


def _decisions(d: _Deps) -> APIRouter:
    """A data party's worker approves or rejects a job (signed)."""
    r = APIRouter(prefix="/api/v1/jobs")

    def decide(decision: str) -> Callable[..., dict[str, str]]:
        def handler(
            job_id: str, body: Decision, who: Annotated[Caller, Depends(d.party_only)]
        ) -> dict[str, str]:
            d.visible(job_id, who)
            if body.payload.get("decision") != decision:
                raise HTTPException(400, f"payload decision must be {decision!r}")
            return {
                "job_id": job_id,
                "state": d.dispatcher.decide(job_id, who.name, body.payload, body.signature),
            }

        return handler

    r.post("/{job_id}/approve")(decide("approve"))
    r.post("/{job_id}/reject")(decide("reject"))
    return r


def _registry(d: _Deps) -> APIRouter:
    """Models, enrolled parties, revocation and the revocation list."""
    r = APIRouter(prefix="/api/v1")

    @r.get("/models")
    def models(who: Annotated[Caller, Depends(d.caller)]) -> list[dict[str, Any]]:
        with d.dispatcher.session() as s:
            rows = list(s.scalars(select(ModelEntry).order_by(ModelEntry.created)))
            return [_model(m) for m in rows if who.admin or who.name in json.loads(m.parties)]

    @r.get("/parties")
    def parties(who: Annotated[Caller, Depends(d.caller)]) -> list[dict[str, Any]]:
        with d.dispatcher.session() as s:
            return [_party(p) for p in s.scalars(select(Party).order_by(Party.name))]

    @r.post("/parties/{party}/revoke")
    def revoke(party: str, who: Annotated[Caller, Depends(d.caller)]) -> dict[str, str]:
        if not who.admin:
            raise HTTPException(403, "only the operator revokes certificates")
        return {"party": party, "revoked_serial": d.identity.revoke(party)}

    @r.get("/crl")
    def crl() -> dict[str, list[str]]:
        return {"revoked_serials": d.identity.revoked()}

    return r


def _agent(d: _Deps) -> APIRouter:
    """The worker endpoints: enrollment, heartbeats (which carry assignments) and event reports."""
    r = APIRouter(prefix="/api/v1")

    @r.post("/enroll")
    def enroll(body: Enroll) -> dict[str, str]:
        try:
            return d.identity.enroll(body.party, body.token, body.csr.encode())
        except PermissionError as exc:
            raise HTTPException(403, str(exc)) from exc

    @r.post("/agent/heartbeat")
    def heartbeat(body: Heartbeat, who: Annotated[Caller, Depends(d.party_only)]) -> dict[str, Any]:
        return d.dispatcher.heartbeat(who.name, body.running)

    @r.post("/agent/events")
    def report(body: Report, who: Annotated[Caller, Depends(d.party_only)]) -> dict[str, str]:
        try:
            d.dispatcher.report(who.name, body.job_id, body.attempt, body.events)
        except KeyError as exc:
            raise HTTPException(404, f"no job {body.job_id} with party {who.name}") from exc
        return {"status": "ok"}

    return r


def _party(p: Party) -> dict[str, Any]:
    return {
        "party": p.name,
        "last_heartbeat": p.last_heartbeat,
        "enrolled": p.enrolled,
        "revoked": p.revoked,
        "serial": p.serial,
        "running": json.loads(p.running),
    }


def _submit(dispatcher: Dispatcher, text: str, who: Caller) -> str:
    from sharelearn.runtime.coordinator.jobs import check_job

    if not who.admin and who.name not in check_job(text).parties:
        raise ConfigError(f"party {who.name} may only submit jobs it takes part in")
    return dispatcher.submit(text, who.name)


def _events(dispatcher: Dispatcher, job_id: str, party: str | None, after: int) -> list[dict[str, Any]]:
    with dispatcher.session() as s:
        q = select(Event).where(Event.job_id == job_id, Event.id > after).order_by(Event.id)
        if party:
            q = q.where(Event.party == party)
        return [
            {
                "id": e.id,
                "at": e.at,
                "party": e.party,
                "kind": e.kind,
                "step": e.step,
                "message": e.message,
                "metrics": {k: v for k, v in json.loads(e.metrics).items() if k != "outputs"},
            }
            for e in s.scalars(q)
        ]


async def _sse(dispatcher: Dispatcher, job_id: str) -> AsyncIterator[str]:
    after = 0
    while True:
        batch = await asyncio.to_thread(_events, dispatcher, job_id, None, after)
        for e in batch:
            after = e["id"]
            yield f"id: {e['id']}\nevent: {e['kind']}\ndata: {json.dumps(e)}\n\n"
        with dispatcher.session() as s:
            job = s.get(Job, job_id)
            state = job.state if job else "failed"
        if state in FINAL_JOB_STATES and not batch:
            yield f"event: end\ndata: {json.dumps({'state': state})}\n\n"
            return
        await asyncio.sleep(0.2)


def _model(m: ModelEntry) -> dict[str, Any]:
    return {
        "model_id": m.model_id,
        "version": m.version,
        "job_id": m.job_id,
        "step": m.step,
        "parties": json.loads(m.parties),
        "lineage": json.loads(m.lineage),
        "created": m.created,
    }


submit_as = _submit  # the dashboard's submit form makes the same check
