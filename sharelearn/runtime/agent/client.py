"""The worker's side of the control plane: HTTP calls out to the coordinator (no inbound port)."""

from __future__ import annotations

from typing import Any

import httpx

from sharelearn.core.errors import ConfigError, ProtocolError
from sharelearn.runtime.enroll import sign_payload

__all__ = ["CoordinatorClient", "decision_payload"]


def decision_payload(job: dict[str, Any], party: str, decision: str, reason: str = "") -> dict[str, Any]:
    """What a party signs to approve or reject a job: the job's id and digest, its name, the decision."""
    return {
        "job_id": job["job_id"],
        "digest": job["digest"],
        "party": party,
        "decision": decision,
        "reason": reason,
    }


class CoordinatorClient:
    """A bearer-token HTTP client of one coordinator; errors name the call and the coordinator."""

    def __init__(self, url: str, token: str = "", timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ProtocolError(f"coordinator {self.url}: {method} {path} failed: {exc}") from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            kind = ConfigError if r.status_code in (400, 404, 422) else ProtocolError
            raise kind(f"coordinator {self.url}: {method} {path}: HTTP {r.status_code}: {detail}")
        return r.json()

    def heartbeat(self, running: list[str]) -> dict[str, Any]:
        return dict(self.call("POST", "/api/v1/agent/heartbeat", json={"running": running}))

    def report(self, job_id: str, attempt: int, events: list[dict[str, Any]]) -> None:
        self.call(
            "POST", "/api/v1/agent/events", json={"job_id": job_id, "attempt": attempt, "events": events}
        )

    def decide(self, job: dict[str, Any], party: str, key_pem: bytes, decision: str, reason: str = "") -> str:
        payload = decision_payload(job, party, decision, reason)
        body = {"payload": payload, "signature": sign_payload(key_pem, payload)}
        return str(self.call("POST", f"/api/v1/jobs/{job['job_id']}/{decision}", json=body)["state"])
