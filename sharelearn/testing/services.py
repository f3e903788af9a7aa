"""`sharelearn tee cm` / `sharelearn tee host` as OS processes, for tests and benchmarks.

Each service prints one JSON line (its endpoint and facts) on stdout once it listens; it runs in
its own session, so stopping it takes its enclave processes down too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["spawn_tee_service", "stop_service"]


def spawn_tee_service(args: list[str], log: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `sharelearn tee <args>` (stderr to `log`); return the process and its startup JSON.

    Raises:
        RuntimeError: the service exited before printing its line (the log's tail says why).
    """
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharelearn", "tee", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    assert proc.stdout is not None  # invariant: stdout=PIPE
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(f"`sharelearn tee {args[0]}` did not start: {log.read_text()[-2000:]}")
    info: dict[str, Any] = json.loads(line)
    return proc, info


def stop_service(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the service's process group, SIGKILL it after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
