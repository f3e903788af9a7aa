"""What runs inside every enclave process, whatever the backend: load the handlers, serve calls.

`load_handlers` imports `module:function` from the measured bundle and calls it with the
backend's runtime; `serve_calls` answers `call` frames (`frames`) with the handlers' results
until an `exit` frame. Error texts go to the untrusted host: handlers must not put secrets in them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

from sharelearn.core.errors import ProtocolError, SharelearnError
from sharelearn.core.types import Wire
from sharelearn.tee.frames import FrameStream, recv_frame, send_frame

__all__ = ["Handler", "load_handlers", "serve_calls"]

Handler = Callable[[Wire], Wire]


def load_handlers(directory: str, entry: str, runtime: object) -> Mapping[str, Handler]:
    """Import `module:function` from the measured bundle directory and call it with the runtime."""
    sys.path.insert(0, directory)
    module_name, _, func_name = entry.partition(":")
    handlers = getattr(importlib.import_module(module_name), func_name)(runtime)
    if not isinstance(handlers, Mapping):
        raise ProtocolError(f"entrypoint {entry} must return a mapping of handlers", peer="platform")
    return handlers


def serve_calls(sock: FrameStream, handlers: Mapping[str, Handler]) -> None:
    """Answer `call` frames with the handlers' results until an `exit` frame."""
    while True:
        msg = recv_frame(sock)
        if msg["op"] == "exit":
            return
        method = msg.get("method")
        handler = handlers.get(method) if isinstance(method, str) else None
        if msg["op"] != "call" or handler is None:
            send_frame(sock, {"op": "error", "error": f"no handler {method!r}"})
            continue
        try:
            send_frame(sock, {"op": "result", "value": handler(msg.get("arg"))})
        except (SharelearnError, ValueError, TypeError, KeyError) as exc:
            # The error text goes to the untrusted host: handlers must not put secrets in it.
            send_frame(sock, {"op": "error", "error": f"{type(exc).__name__}: {exc}"})
        except Exception as exc:  # a handler bug on odd input must not take the enclave down
            send_frame(sock, {"op": "error", "error": f"internal error ({type(exc).__name__})"})
