"""Persistent worker processes for GIL-bound big-integer work.

gmpy2 multiplications hold the GIL, so threads cannot spread them over cores. Each worker here is a
child `python -c <entry>` started with a fixed entry point: unlike multiprocessing's spawn and
forkserver it never re-imports the caller's `__main__` (so scripts without a main guard are safe),
and unlike fork it is safe in a process that already runs threads. Requests and replies are
length-prefixed messages in sharelearn's wire codec (no pickle) over the child's stdin/stdout. A
worker exits when its stdin closes, i.e. at the latest when its parent exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

from sharelearn.core import codec
from sharelearn.core.errors import CryptoError
from sharelearn.core.types import Wire

__all__ = ["Worker", "acquire", "release", "serve"]

log = logging.getLogger(__name__)
_HEADER = 8
_lock = threading.Lock()
_workers: list[Worker] = []
_owner = [os.getpid()]  # the process that started `_workers`


def _write(stream: IO[bytes], value: Wire) -> None:
    raw = codec.encode(value)
    stream.write(len(raw).to_bytes(_HEADER, "little") + raw)
    stream.flush()


def _read(stream: IO[bytes]) -> Wire | None:
    head = stream.read(_HEADER)
    if len(head) < _HEADER:
        return None
    size = int.from_bytes(head, "little")
    raw = stream.read(size)
    if len(raw) != size:
        return None
    return codec.decode(raw, peer="procpool", tag="request")


class Worker:
    """One child process running `entry` (a Python statement that calls `serve`)."""

    def __init__(self, entry: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.entry = entry
        self.busy = False
        # A new session: Ctrl-C goes to the parent only; the child ends when its stdin closes.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", entry],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    def send(self, request: Wire) -> None:
        if self.proc.stdin is None:
            raise CryptoError("worker process has no stdin")
        _write(self.proc.stdin, request)

    def recv(self) -> Wire:
        """Return the reply to the last request; raises CryptoError if the worker died or failed."""
        if self.proc.stdout is None:
            raise CryptoError("worker process has no stdout")
        reply = _read(self.proc.stdout)
        if reply is None:
            raise CryptoError(f"worker process {self.proc.pid} exited (code {self.proc.poll()})")
        if isinstance(reply, dict) and "error" in reply:
            raise CryptoError(f"worker process {self.proc.pid} failed: {reply['error']!r}")
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def acquire(count: int, entry: str) -> list[Worker]:
    """Reserve up to `count` idle workers running `entry`, starting new ones as needed.

    At most cpu_count - 1 workers exist at once (the caller's thread works too), so concurrent
    callers share them; a caller may get fewer than `count`, or none.
    """
    with _lock:
        if _owner[0] != os.getpid():  # a forked child must not share its parent's pipes
            _workers.clear()
            _owner[0] = os.getpid()
        alive = [w for w in _workers if w.proc.poll() is None]
        _workers[:] = alive
        got = [w for w in alive if not w.busy and w.entry == entry][:count]
        while len(got) < count and len(_workers) < max(1, (os.cpu_count() or 1) - 1):
            worker = Worker(entry)
            _workers.append(worker)
            got.append(worker)
        for w in got:
            w.busy = True
        return got


def release(workers: list[Worker], *, broken: bool = False) -> None:
    """Return workers to the pool (`broken`: stop them instead)."""
    with _lock:
        for w in workers:
            w.busy = False
            if broken and w in _workers:
                _workers.remove(w)
    if broken:
        for w in workers:
            w.close()


@atexit.register
def _shutdown() -> None:
    with _lock:
        workers, _workers[:] = list(_workers), []
    for w in workers:
        w.close()


def serve(handler: Callable[[Wire], Wire]) -> None:
    """Child side: answer requests from stdin with handler(request) until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        request = _read(stdin)
        if request is None:
            return
        try:
            reply = handler(request)
        except Exception as exc:  # reported to the parent, which raises CryptoError
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        _write(stdout, reply)
