"""The guest's REST API (FastAPI): predict, versions, status and Prometheus metrics.

    POST /v1/models/{model_id}/predict        {"ids": [...], "features": {"col": [...]}, "version": opt}
    GET  /v1/models/{model_id}                status (versions, canary, hosts, latency percentiles)
    POST /v1/models/{model_id}/versions/{v}/load      phase one: load v on every party
    POST /v1/models/{model_id}/versions/{v}/activate  phase two: switch to v
    POST /v1/models/{model_id}/rollback
    POST /v1/models/{model_id}/canary         {"version": v | null, "share": 0..1}
    GET  /v1/status                           the same, without naming the model
    GET  /metrics

Errors are JSON {"error": ...}: 400 bad request data, 404 another model, 409 a version a party
has not loaded, 413 batch too large, 503 a host unavailable within the deadline.
"""

from __future__ import annotations

from typing import Any

from sharelearn.core.errors import ConfigError, DataError, ProtocolError, SharelearnError
from sharelearn.runtime.serving.guest import BatchTooLarge, GuestService
from sharelearn.runtime.serving.replicas import HostUnavailable
from sharelearn.runtime.serving.wire import RpcFailed

__all__ = ["http_status", "make_app"]


def http_status(exc: SharelearnError) -> int:
    """The HTTP status of a serving error."""
    if isinstance(exc, HostUnavailable):
        return 503
    if isinstance(exc, RpcFailed):
        return 409 if exc.code == "FAILED_PRECONDITION" else 502
    if isinstance(exc, ConfigError):
        return 413 if isinstance(exc, BatchTooLarge) else 409
    if isinstance(exc, DataError):
        return 400
    if isinstance(exc, ProtocolError):
        return 502
    return 500


def make_app(service: GuestService) -> Any:
    """The FastAPI app of one guest serving process."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="sharelearn serving (guest)")
    model_id = service.config.model_id

    @app.exception_handler(SharelearnError)
    async def _error(_: Request, exc: SharelearnError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=http_status(exc))

    def _check(mid: str) -> None:
        if mid != model_id:
            raise HTTPException(404, f"this process serves model {model_id}, not {mid}")

    @app.post("/v1/models/{mid}/predict")
    def predict(mid: str, body: dict[str, Any]) -> dict[str, Any]:
        _check(mid)
        ids, features, version = body.get("ids"), body.get("features", {}), body.get("version")
        if (
            not isinstance(ids, list)
            or not all(isinstance(i, str) for i in ids)
            or not isinstance(features, dict)
        ):
            raise DataError('a predict body is {"ids": [str, ...], "features": {column: [number, ...]}}')
        if version is not None and not isinstance(version, int):
            raise DataError("version must be an integer")
        return service.predict(ids, features, version=version).to_json()

    @app.get("/v1/models/{mid}")
    def status(mid: str) -> dict[str, Any]:
        _check(mid)
        return service.status()

    @app.post("/v1/models/{mid}/versions/{version}/load")
    def load(mid: str, version: int) -> dict[str, Any]:
        _check(mid)
        return {"loaded": service.prepare(version)}

    @app.post("/v1/models/{mid}/versions/{version}/activate")
    def activate(mid: str, version: int) -> dict[str, Any]:
        _check(mid)
        service.switch(version)
        return service.status()

    @app.post("/v1/models/{mid}/rollback")
    def rollback(mid: str) -> dict[str, Any]:
        _check(mid)
        service.rollback()
        return service.status()

    @app.post("/v1/models/{mid}/canary")
    def canary(mid: str, body: dict[str, Any]) -> dict[str, Any]:
        _check(mid)
        service.set_canary(body.get("version"), float(body.get("share", 0.0)))
        return service.status()

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/status")
    def any_status() -> dict[str, Any]:
        return service.status()

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
