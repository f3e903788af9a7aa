"""The dashboard's routes: HTML pages at `/`, their JSON twins under `/api/v1/dashboard/`, the
live-change streams (server-sent events), and the packaged static files (htmx, plotly.js, CSS).

A browser authenticates once with a token (the operator's, or a party's: `/?token=...` or the login
form); it is kept in an HttpOnly, SameSite=Strict cookie. A party sees only its own jobs and inbox.
Approvals are signed in the browser with the party's own key (WebCrypto; the key file never leaves
the browser) and sent to the REST API's `/approve` or `/reject` with the party's token.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Depends, FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select

from sharelearn.core.errors import ConfigError
from sharelearn.runtime.coordinator.auth import Caller, Identity
from sharelearn.runtime.coordinator.dashboard import data
from sharelearn.runtime.coordinator.dashboard.plots import plot_divs, plotly_js
from sharelearn.runtime.coordinator.dispatch import Dispatcher
from sharelearn.runtime.coordinator.models import Event, Job
from sharelearn.runtime.coordinator.states import FINAL_JOB_STATES
from sharelearn.runtime.enroll import canonical_json

__all__ = ["mount_dashboard"]

_HERE = Path(__file__).parent
_STATIC = {"htmx.min.js": "text/javascript", "app.js": "text/javascript", "style.css": "text/css"}
_COOKIE = "sl_token"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape())
    env.filters["ts"] = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "—"
    env.filters["size"] = lambda n: "—" if n is None else (f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n:,} B")
    env.filters["tojson_compact"] = lambda v: json.dumps(v, separators=(",", ":"))
    return env


class _Ui:
    """The store, the identity and the templates the routes share."""

    def __init__(self, dispatcher: Dispatcher, identity: Identity) -> None:
        self.dispatcher, self.identity, self.env = dispatcher, identity, _env()

    def who(self, token: str) -> Caller | None:
        try:
            return self.identity.caller(token)
        except PermissionError:
            return None

    def page(self, name: str, who: Caller, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(who=who, **ctx))

    def job(self, job_id: str, who: Caller) -> Job:
        with self.dispatcher.session() as s:
            job = s.get(Job, job_id)
            if job is None or not who.may_see(job):
                raise HTTPException(404, f"no job {job_id}")
            s.expunge(job)
            return job


def _caller(ui: _Ui) -> Callable[..., Caller]:
    def dep(
        authorization: Annotated[str | None, Header()] = None,
        sl_token: Annotated[str | None, Cookie()] = None,
    ) -> Caller:
        token = (authorization or "").removeprefix("Bearer ").strip() or (sl_token or "")
        who = ui.who(token)
        if who is None:
            raise HTTPException(401, "sign in with a token: /login")
        return who

    return dep


def mount_dashboard(app: FastAPI, dispatcher: Dispatcher, identity: Identity) -> None:
    """Add the dashboard (pages, JSON, streams, static files) to the coordinator's app."""
    ui = _Ui(dispatcher, identity)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and not request.url.path.startswith("/api/"):
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    for router in (_static(), _login(ui), _json(ui), _pages(ui), _actions(ui), _streams(ui)):
        app.include_router(router)


def _static() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/static/plotly.min.js")
    def plotly() -> Response:
        return Response(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @r.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"no static file {name}")
        body = (_HERE / "static" / name).read_bytes()
        return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "max-age=3600"})

    return r


def _login(ui: _Ui) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def signed_in(token: str, to: str = "/") -> Response:
        if ui.who(token) is None:
            return HTMLResponse(ui.env.get_template("login.html").render(error="unknown token"), 401)
        resp = RedirectResponse(to, status_code=303)
        resp.set_cookie(_COOKIE, token, httponly=True, samesite="strict")
        return resp

    @r.get("/login")
    def login_page(token: str = "") -> Response:
        if token:
            return signed_in(token)
        return HTMLResponse(ui.env.get_template("login.html").render(error=""))

    @r.post("/login")
    def login(token: Annotated[str, Form()]) -> Response:
        return signed_in(token.strip())

    return r


def _json(ui: _Ui) -> APIRouter:
    """Every page's data as JSON (the pages render exactly these objects)."""
    r = APIRouter(prefix="/api/v1/dashboard")
    caller = _caller(ui)
    Who = Annotated[Caller, Depends(caller)]

    @r.get("/jobs")
    def jobs(who: Who, state: str = "", party: str = "", limit: int = 200) -> dict[str, Any]:
        with ui.dispatcher.session() as s:
            return data.job_rows(s, who, state, party, limit)

    @r.get("/jobs/{job_id}")
    def job(job_id: str, who: Who) -> dict[str, Any]:
        ui.job(job_id, who)
        with ui.dispatcher.session() as s:
            return data.job_report(s, s.get(Job, job_id))  # type: ignore[arg-type]

    @r.get("/jobs/{job_id}/wire")
    def wire(job_id: str, who: Who) -> dict[str, Any]:
        ui.job(job_id, who)
        with ui.dispatcher.session() as s:
            return data.wire_report(s, s.get(Job, job_id))  # type: ignore[arg-type]

    @r.get("/jobs/{job_id}/logs")
    def logs(job_id: str, who: Who, party: str, limit: int = 200) -> list[dict[str, Any]]:
        ui.job(job_id, who)
        with ui.dispatcher.session() as s:
            return data.log_tail(s, job_id, party, limit)

    @r.get("/approvals")
    def approvals(who: Who, party: str = "") -> list[dict[str, Any]]:
        with ui.dispatcher.session() as s:
            return data.approvals_inbox(s, who, party)

    @r.get("/approvals/{job_id}/payload")
    def payload(job_id: str, who: Who, party: str, decision: str, reason: str = "") -> dict[str, Any]:
        """The exact bytes a party signs to decide on a job (the REST approve/reject body's payload)."""
        if decision not in ("approve", "reject"):
            raise HTTPException(400, "decision must be approve or reject")
        job = ui.job(job_id, who)
        body = {
            "job_id": job.id,
            "digest": job.digest,
            "party": party,
            "decision": decision,
            "reason": reason,
        }
        return {"payload": body, "canonical": canonical_json(body).decode()}

    @r.get("/models")
    def models(who: Who) -> list[dict[str, Any]]:
        with ui.dispatcher.session() as s:
            return data.model_rows(s, who)

    @r.get("/parties")
    def parties(who: Who) -> list[dict[str, Any]]:
        with ui.dispatcher.session() as s:
            return data.party_rows(s)

    return r


def _pages(ui: _Ui) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    Who = Annotated[Caller, Depends(_caller(ui))]

    @r.get("/", response_class=HTMLResponse)
    def jobs(who: Who, state: str = "", party: str = "", rows: int = 0) -> HTMLResponse:
        with ui.dispatcher.session() as s:
            listing = data.job_rows(s, who, state, party)
        return ui.page("jobs_rows.html" if rows else "jobs.html", who, listing=listing)

    @r.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job(job_id: str, who: Who, part: str = "") -> HTMLResponse:
        ui.job(job_id, who)
        with ui.dispatcher.session() as s:
            report = data.job_report(s, s.get(Job, job_id))  # type: ignore[arg-type]
            logs = {p: data.log_tail(s, job_id, p, 200) for p in report["parties"]}
        final = report["state"] in FINAL_JOB_STATES
        charts = plot_divs(report["plots"]) if final and part in ("", "metrics") else {}
        name = f"job_{part}.html" if part in ("head", "logs", "metrics") else "job.html"
        return ui.page(name, who, job=report, logs=logs, charts=charts, final=final)

    @r.get("/jobs/{job_id}/wire", response_class=HTMLResponse)
    def wire(job_id: str, who: Who) -> HTMLResponse:
        ui.job(job_id, who)
        with ui.dispatcher.session() as s:
            return ui.page("wire.html", who, wire=data.wire_report(s, s.get(Job, job_id)))  # type: ignore[arg-type]

    @r.get("/approvals", response_class=HTMLResponse)
    def approvals(who: Who, party: str = "") -> HTMLResponse:
        with ui.dispatcher.session() as s:
            inbox = data.approvals_inbox(s, who, party)
        return ui.page("approvals.html", who, inbox=inbox, party=party if who.admin else who.name)

    @r.get("/models", response_class=HTMLResponse)
    def models(who: Who) -> HTMLResponse:
        with ui.dispatcher.session() as s:
            return ui.page("models.html", who, models=data.model_rows(s, who))

    @r.get("/parties", response_class=HTMLResponse)
    def parties(who: Who) -> HTMLResponse:
        with ui.dispatcher.session() as s:
            return ui.page("parties.html", who, parties=data.party_rows(s))

    return r


def _actions(ui: _Ui) -> APIRouter:
    """Submit, cancel and rerun from the pages (the same dispatcher calls as the REST API)."""
    r = APIRouter(include_in_schema=False)
    Who = Annotated[Caller, Depends(_caller(ui))]

    def go(url: str) -> Response:
        return Response(status_code=204, headers={"HX-Redirect": url})

    @r.post("/ui/submit")
    async def submit(who: Who, spec: Annotated[str, Form()]) -> Response:
        from sharelearn.runtime.coordinator.api import submit_as

        try:
            job_id = await asyncio.to_thread(submit_as, ui.dispatcher, spec, who)
        except ConfigError as exc:
            return HTMLResponse(f'<p class="error" id="submit-error">{data.redact(str(exc), 600)}</p>', 200)
        return go(f"/jobs/{job_id}")

    @r.post("/ui/jobs/{job_id}/cancel")
    def cancel(job_id: str, who: Who) -> Response:
        ui.job(job_id, who)
        ui.dispatcher.cancel(job_id, who.name)
        return go(f"/jobs/{job_id}")

    @r.post("/ui/jobs/{job_id}/rerun")
    def rerun(job_id: str, who: Who, from_step: Annotated[str, Form()] = "") -> Response:
        old = ui.job(job_id, who)
        return go(f"/jobs/{ui.dispatcher.submit(old.spec, who.name, parent=job_id, from_step=from_step)}")

    return r


async def _changes(probe: Callable[[], tuple[Any, bool]]) -> AsyncIterator[str]:
    """An SSE stream: `change` whenever `probe`'s fingerprint moves, `end` once it says final."""
    last: Any = None
    while True:
        mark, final = await asyncio.to_thread(probe)
        if mark != last:
            last = mark
            yield f"event: change\ndata: {json.dumps({'at': time.time()})}\n\n"
        elif final:
            yield "event: end\ndata: {}\n\n"
            return
        await asyncio.sleep(0.4)


def _streams(ui: _Ui) -> APIRouter:
    r = APIRouter(prefix="/api/v1/dashboard")
    Who = Annotated[Caller, Depends(_caller(ui))]

    @r.get("/stream")
    def jobs_stream(who: Who) -> StreamingResponse:
        """Any job changed (the jobs list re-reads its rows)."""

        def probe() -> tuple[Any, bool]:
            with ui.dispatcher.session() as s:
                return tuple(s.execute(select(func.count(Job.id), func.max(Job.updated))).one()), False

        return StreamingResponse(_changes(probe), media_type="text/event-stream")

    @r.get("/jobs/{job_id}/stream")
    def job_stream(job_id: str, who: Who) -> StreamingResponse:
        """This job's state or events changed; ends once the job is final and quiet."""
        ui.job(job_id, who)

        def probe() -> tuple[Any, bool]:
            with ui.dispatcher.session() as s:
                job = s.get(Job, job_id)
                last = s.scalar(select(func.max(Event.id)).where(Event.job_id == job_id))
                state = job.state if job else "failed"
                return (state, job.updated if job else 0, last), state in FINAL_JOB_STATES

        return StreamingResponse(_changes(probe), media_type="text/event-stream")

    return r
