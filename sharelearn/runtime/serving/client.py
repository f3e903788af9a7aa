"""A Python client of a guest serving process (REST, over httpx)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from sharelearn.core.errors import DataError, ProtocolError

__all__ = ["ServingClient", "ServingError"]


class ServingError(ProtocolError):
    """The guest refused or failed a request; `status` is the HTTP status (503: a host unavailable)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServingClient:
    """`predict`, `status` and version operations against one guest's REST endpoint."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            reply = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ServingError(f"{self._http.base_url}{path}: {exc}", status=0) from exc
        doc = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
        if reply.status_code != 200:
            detail = doc.get("error") or doc.get("detail") or reply.text
            raise ServingError(f"{path}: HTTP {reply.status_code}: {detail}", status=reply.status_code)
        return dict(doc)

    def predict(
        self,
        model: str,
        ids: Sequence[str],
        features: Mapping[str, Sequence[float]],
        *,
        version: int | None = None,
    ) -> dict[str, Any]:
        """Scores of `ids` (guest features by column); rows a host does not know come back in `errors`."""
        if len(ids) == 0:
            raise DataError("predict needs at least one id")
        body: dict[str, Any] = {
            "ids": list(ids),
            "features": {k: list(map(float, v)) for k, v in features.items()},
        }
        if version is not None:
            body["version"] = version
        return self._send("POST", f"/v1/models/{model}/predict", body)

    def status(self, model: str | None = None) -> dict[str, Any]:
        """The guest's status (of `model`, checked when given): versions, canary, hosts, latency."""
        return self._send("GET", "/v1/status" if model is None else f"/v1/models/{model}")

    def load(self, model: str, version: int) -> dict[str, Any]:
        return self._send("POST", f"/v1/models/{model}/versions/{version}/load")

    def activate(self, model: str, version: int) -> dict[str, Any]:
        return self._send("POST", f"/v1/models/{model}/versions/{version}/activate")

    def rollback(self, model: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/models/{model}/rollback")

    def canary(self, model: str, version: int | None, share: float) -> dict[str, Any]:
        return self._send("POST", f"/v1/models/{model}/canary", {"version": version, "share": share})

    def metrics(self) -> str:
        return self._http.get("/metrics").text
