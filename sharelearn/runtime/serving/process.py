"""Run a guest or host serving process until it is told to stop (SIGTERM / SIGINT).

Each process can write a ready file (JSON: its ports) once it listens, so whoever starts it on a
free port (port 0) learns where it is; the file is written atomically.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sharelearn.core.fileio import atomic_write_json
from sharelearn.runtime.certs import load_credentials
from sharelearn.runtime.serving.guest import GuestConfig, GuestService
from sharelearn.runtime.serving.host import HostService, check_started
from sharelearn.runtime.serving.providers import load_provider
from sharelearn.runtime.serving.wire import serve_rpc

__all__ = ["parse_hosts", "run_guest", "run_host"]

log = logging.getLogger(__name__)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_host(
    *,
    party: str,
    model_id: str,
    folder: Path,
    features: str,
    certs: Path,
    listen: str,
    version: int | None = None,
    id_column: str = "id",
    ready_file: Path | None = None,
) -> None:
    """Serve this host's part of `model_id` from `folder`, features from `features`, on `listen`."""
    service = HostService(party, model_id, folder, load_provider(features, id_column=id_column))
    service.load(version)
    check_started(service)
    server, port = serve_rpc(load_credentials(certs, party), listen, service.handlers(), service.allowed)
    log.info("host %s serving model %s v%s on port %d", party, model_id, service.active, port)
    if ready_file is not None:
        atomic_write_json(ready_file, {"grpc_port": port, "party": party})
    stop = _stop_event()
    while not stop.wait(0.5):  # a timed wait: the signal handler runs between waits
        pass
    server.stop(0.5).wait(1.0)


def _guest_rpc(service: GuestService) -> dict[str, Any]:
    def predict(doc: dict[str, Any], caller: str) -> dict[str, Any]:
        return service.predict(
            list(doc.get("ids") or []), dict(doc.get("features") or {}), version=doc.get("version")
        ).to_json()

    def status(doc: dict[str, Any], caller: str) -> dict[str, Any]:
        return service.status()

    return {"Predict": predict, "Status": status}


def run_guest(
    config: GuestConfig,
    *,
    certs: Path,
    http: str,
    grpc_listen: str | None = None,
    grpc_clients: Sequence[str] = (),
    version: int | None = None,
    ready_file: Path | None = None,
) -> None:
    """Serve the guest's REST endpoint on `http` ("host:port") and, optionally, gRPC on `grpc_listen`."""
    import uvicorn

    from sharelearn.runtime.serving.rest import make_app

    service = GuestService(config, load_credentials(certs, config.party))
    service.switch(service.prepare(version))
    host, _, port = http.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "127.0.0.1", int(port)))
    sock.listen(2048)  # before the ready file: a client connecting at once waits in the backlog
    ready: dict[str, Any] = {"http_port": sock.getsockname()[1], "party": config.party}
    grpc_server = None
    if grpc_listen is not None:
        allowed = {config.party, *grpc_clients}
        grpc_server, ready["grpc_port"] = serve_rpc(service.creds, grpc_listen, _guest_rpc(service), allowed)
    server = uvicorn.Server(uvicorn.Config(make_app(service), log_level="warning", access_log=False))
    if ready_file is not None:
        atomic_write_json(ready_file, ready)
    log.info("guest %s serving model %s v%d: %s", config.party, config.model_id, service.active, ready)
    server.run(sockets=[sock])  # returns on SIGTERM / SIGINT (uvicorn's own handlers)
    if grpc_server is not None:
        grpc_server.stop(1.0).wait(2.0)
    service.close()


def parse_hosts(specs: Sequence[str]) -> Mapping[str, list[str]]:
    """`party=addr[,addr...]` per host party (several addresses: a replica set)."""
    from sharelearn.core.errors import ConfigError

    out: dict[str, list[str]] = {}
    for spec in specs:
        party, sep, addrs = spec.partition("=")
        if not sep or not party or not addrs:
            raise ConfigError(f"--host {spec!r}: expected PARTY=HOST:PORT[,HOST:PORT...]")
        out.setdefault(party, []).extend(a.strip() for a in addrs.split(",") if a.strip())
    return out
