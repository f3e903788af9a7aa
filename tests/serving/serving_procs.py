"""Start guest and host serving processes (`python -m sharelearn serve ...`) on free ports; stop them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    ready: dict[str, int]
    log: Path
    ready_file: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(5)


@dataclass
class Fleet:
    """The processes a test started; all stopped when the test ends."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, args: Sequence[str]) -> Proc:
        """Start a process without waiting for it (see `wait`)."""
        ready = self.tmp / f"{name}.ready.json"
        log = self.tmp / f"{name}.log"
        path = [str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]  # HERE: plug-in providers
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "sharelearn", *args, "--ready-file", str(ready)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.tmp,
            )
        proc = Proc(name, popen, {}, log, ready)
        self.procs.append(proc)
        return proc

    def wait(self, *procs: Proc, timeout: float = 120.0) -> None:
        """Wait until every process listens (its ready file exists); fail with its log otherwise."""
        end = time.monotonic() + timeout
        for proc in procs:
            while not proc.ready_file.exists():
                if proc.popen.poll() is not None or time.monotonic() > end:
                    proc.stop()
                    raise RuntimeError(
                        f"{proc.name} did not start (rc {proc.popen.poll()}):\n{proc.output()}"
                    )
                time.sleep(0.05)
            proc.ready = json.loads(proc.ready_file.read_text())

    def start(self, name: str, args: Sequence[str]) -> Proc:
        proc = self.spawn(name, args)
        self.wait(proc)
        return proc

    def host(
        self, party: str, model: str, folder: Path, features: Path | str, certs: Path, *extra: str
    ) -> Proc:
        args = [
            "serve",
            "host",
            "--model",
            model,
            "--party",
            party,
            "--models",
            str(folder),
            "--features",
            str(features),
            "--certs",
            str(certs),
            "--listen",
            "127.0.0.1:0",
            *extra,
        ]
        return self.spawn(f"{party}-{len(self.procs)}", args)

    def guest(
        self, party: str, model: str, folder: Path, certs: Path, hosts: dict[str, list[Proc]], *extra: str
    ) -> Proc:
        """Start the guest once every host process listens."""
        self.wait(*[p for ps in hosts.values() for p in ps])
        args = [
            "serve",
            "guest",
            "--model",
            model,
            "--party",
            party,
            "--models",
            str(folder),
            "--certs",
            str(certs),
            "--http",
            "127.0.0.1:0",
        ]
        for h, procs in hosts.items():
            args += ["--host", f"{h}=" + ",".join(f"127.0.0.1:{p.ready['grpc_port']}" for p in procs)]
        return self.start(f"{party}-{len(self.procs)}", [*args, *extra])

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@contextmanager
def fleet(tmp: Path) -> Iterator[Fleet]:
    f = Fleet(tmp)
    try:
        yield f
    finally:
        f.stop()
