"""Run a coordinator: open (and migrate) the job store, make its CA once, serve the API with uvicorn.

The state folder holds `coordinator.db` (SQLite default), `ca/` (the CA key that signs enrollment
requests: never a party's folder), `admin.token` (the operator's token) and `url` (where it listens).
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from sharelearn.core.fileio import atomic_write_text
from sharelearn.runtime.coordinator.api import make_app
from sharelearn.runtime.coordinator.auth import Identity
from sharelearn.runtime.coordinator.dashboard import mount_dashboard
from sharelearn.runtime.coordinator.db import migrate, open_engine, sqlite_url
from sharelearn.runtime.coordinator.dispatch import Dispatcher
from sharelearn.runtime.enroll import make_ca

__all__ = ["CoordinatorOptions", "open_coordinator", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CoordinatorOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8710
    db_url: str = ""  # default: SQLite in the state folder
    heartbeat_timeout_s: float = 10.0


def open_coordinator(options: CoordinatorOptions) -> tuple[Dispatcher, Identity]:
    """The coordinator's dispatcher and identity over its (migrated) store; makes the CA once."""
    state = options.state_dir
    state.mkdir(parents=True, exist_ok=True)
    if not (state / "ca" / "ca.pem").is_file():
        make_ca(state / "ca")
    engine = open_engine(options.db_url or sqlite_url(state / "coordinator.db"))
    migrate(engine)
    dispatcher = Dispatcher(engine, heartbeat_timeout_s=options.heartbeat_timeout_s)
    return dispatcher, Identity(dispatcher, state)


def _reconcile_loop(dispatcher: Dispatcher, stop: threading.Event) -> None:
    while not stop.wait(min(1.0, dispatcher.heartbeat_timeout_s / 4)):
        try:
            dispatcher.reconcile()
        except Exception:  # keep serving; the next round retries
            log.exception("reconcile failed")


def serve(options: CoordinatorOptions) -> int:
    """Serve until interrupted; write the URL it listens on to `<state>/url`."""
    dispatcher, identity = open_coordinator(options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.host, options.port))
    url = f"http://{options.host}:{sock.getsockname()[1]}"
    atomic_write_text(options.state_dir / "url", url + "\n")
    log.info("coordinator listening on %s (state %s)", url, options.state_dir)
    stop = threading.Event()
    threading.Thread(target=_reconcile_loop, args=(dispatcher, stop), daemon=True).start()
    app = make_app(dispatcher, identity)
    mount_dashboard(app, dispatcher, identity)  # the web dashboard at `/`
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        stop.set()
    return 0
