"""Persistent worker processes for executors: run module-level kernels on wire values, no pickle.

gmpy2 multiplications hold the GIL, so threads cannot spread them over cores. Each worker here is a
child `python -c <entry>` started with a fixed entry point: unlike multiprocessing's spawn and
forkserver it never re-imports the caller's `__main__` (so scripts without a main guard are safe),
and unlike fork it is safe in a process that already runs threads. A request names a module-level
function (`module:qualname`) and carries its item; requests and replies are length-prefixed
messages in sharelearn's wire codec (no pickle) over the child's stdin/stdout. The child imports
the function's module once and keeps its module-level caches (fixed-base tables) between requests.
A worker exits when its stdin closes, i.e. at the latest when its parent exits.

What a worker learns: the items of the kernels it runs for its parent, nothing else; it answers
only its parent (the pipes are not reachable by any other process of another user).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from sharelearn.core import codec
from sharelearn.core import errors as _errors
from sharelearn.core.errors import ConfigError, CryptoError, SharelearnError
from sharelearn.core.types import Wire

__all__ = ["Pool", "Worker", "WorkerDied", "function_name", "serve"]

_HEADER = 8
_ENTRY = "from sharelearn.runtime.procpool import serve; serve()"
# Errors a kernel raises that keep their class across the pipe (their constructors take a message).
_PORTABLE_ERRORS = ("ConfigError", "CryptoError", "DataError", "DecodeError", "ProtocolError")


class WorkerDied(Exception):
    """A worker process exited or broke its pipe (its item can be redone elsewhere)."""


def _write(stream: IO[bytes], raw: bytes) -> None:
    stream.write(len(raw).to_bytes(_HEADER, "little") + raw)
    stream.flush()


def _encode(value: Wire, fn_name: str, what: str) -> bytes:
    try:
        return codec.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(
            f"{fn_name}: its {what} cannot cross to a worker process (executor items and results "
            f"must be wire values): {exc}"
        ) from exc


def _read(stream: IO[bytes], tag: str) -> Wire | None:
    head = stream.read(_HEADER)
    if len(head) < _HEADER:
        return None
    size = int.from_bytes(head, "little")
    raw = stream.read(size)
    if len(raw) != size:
        return None
    return codec.decode(raw, peer="procpool", tag=tag)


def function_name(fn: Callable[..., Any]) -> str:
    """`module:qualname` of a module-level function; ConfigError for lambdas, closures and methods."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not qualname or "<" in qualname or "." in qualname or module == "__main__":
        raise ConfigError(
            f"{fn!r} cannot run in a worker process: kernels handed to an executor must be "
            "module-level functions of an importable module"
        )
    return f"{module}:{qualname}"


def _resolve(name: str) -> Callable[[Wire], Wire]:
    module, _, qualname = name.partition(":")
    fn = getattr(importlib.import_module(module), qualname, None)
    if not callable(fn):
        raise ConfigError(f"{name} is not a function")
    return fn  # type: ignore[no-any-return]


class Worker:
    """One child process answering kernel requests."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # A new session: Ctrl-C goes to the parent only; the child ends when its stdin closes.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ENTRY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    def call(self, fn_name: str, item: Wire) -> Wire:
        """Run `fn_name(item)` in the child and return its result.

        Raises:
            WorkerDied: the child exited or its pipe broke.
            SharelearnError: the kernel raised (its class is kept for the common error types).
        """
        if self.proc.stdin is None or self.proc.stdout is None:
            raise WorkerDied("worker process has no pipes")
        raw = _encode({"fn": fn_name, "item": item}, fn_name, "item")
        try:
            _write(self.proc.stdin, raw)
            reply = _read(self.proc.stdout, fn_name)
        except (OSError, ValueError) as exc:  # BrokenPipe, or a closed file
            raise WorkerDied(f"worker process {self.proc.pid}: {exc}") from exc
        if not isinstance(reply, dict):
            raise WorkerDied(f"worker process {self.proc.pid} exited (code {self.proc.poll()})")
        if "error" in reply:
            raise _error_from(reply, fn_name, self.proc.pid)
        return reply.get("ok")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # a broken pipe: the child is gone already
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _error_from(reply: dict[str, Any], fn_name: str, pid: int) -> SharelearnError:
    kind, message = str(reply.get("type", "")), str(reply.get("error", ""))
    if kind in _PORTABLE_ERRORS:
        cls: type[SharelearnError] = getattr(_errors, kind)
        return cls(message)
    return CryptoError(f"{fn_name} failed in worker process {pid}: {kind}: {message}")


class Pool:
    """Up to `size` persistent workers, started on first use and shared by concurrent callers."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._count = 0
        self._closed = False

    def acquire(self, count: int) -> list[Worker]:
        """Reserve up to `count` idle workers, starting new ones as needed (may return fewer).

        Raises:
            OSError: a worker process could not be started (sandbox, fd limits).
        """
        with self._lock:
            alive = [w for w in self._idle if w.alive()]
            self._count -= len(self._idle) - len(alive)
            got, self._idle = alive[:count], alive[count:]
            while len(got) < count and self._count < self.size and not self._closed:
                try:
                    got.append(Worker())
                except OSError:
                    if got:  # run with the workers we have
                        break
                    raise
                self._count += 1
            return got

    def release(self, workers: list[Worker], *, broken: frozenset[Worker] = frozenset()) -> None:
        """Return workers to the pool; stop the `broken` ones (a later acquire starts fresh ones)."""
        with self._lock:
            for w in workers:
                if w in broken or self._closed:
                    self._count -= 1
                else:
                    self._idle.append(w)
        for w in workers:
            if w in broken or self._closed:
                w.close()

    def close(self) -> None:
        """Stop the idle workers; busy ones stop when their caller releases them."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.close()


def serve() -> None:
    """Child side: answer requests from stdin until it closes (the parent exited or closed us)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    functions: dict[str, Callable[[Wire], Wire]] = {}
    while True:
        request = _read(stdin, "request")
        if request is None:
            return
        try:
            doc = request if isinstance(request, dict) else {}
            name = doc.get("fn")
            if not isinstance(name, str):
                raise ConfigError("a worker request needs a function name")
            fn = functions.get(name) or functions.setdefault(name, _resolve(name))
            raw = _encode({"ok": fn(doc.get("item"))}, name, "result")
        except Exception as exc:  # reported to the parent, which raises it there
            raw = codec.encode({"error": str(exc), "type": type(exc).__name__})
        _write(stdout, raw)
