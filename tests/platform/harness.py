"""Start a coordinator and workers as OS processes for the platform tests, and stop them all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from sharelearn.interfaces.api import demo_job_path
from sharelearn.runtime.coordinator import CoordinatorOptions, open_coordinator

DEMO = demo_job_path().parent
DEMO_JOB = """\
job: platform-demo
parties:
  bank:  {role: guest, data: {path: breast_hetero_guest.csv, id: id, label: y}}
  shop:  {role: host, data: {path: breast_hetero_host.csv, id: id}}
  coord: {role: arbiter}
steps:
  - psi: {}
  - hetero_lr: {epochs: %(epochs)d, batch_size: 128, learning_rate: 0.15, he_scheme: paillier, key_bits: 1024}
  - evaluate: {}
"""
DATA = {"bank": "breast_hetero_guest.csv", "shop": "breast_hetero_host.csv", "coord": None}
APPROVE_ALL = "default: ask\nauto_approve:\n  - peers: [bank, shop, coord]\n"


def write_party_csv(source: Path, dest: Path, party: str) -> None:
    """The demo split with scannable values: ids become `pid<hex>`, features get 9 decimals, and each
    party drops rows the other keeps (bank: every 13th, shop: every 11th), so both own ids outside
    the intersection."""
    frame = pd.read_csv(source)
    frame["id"] = [f"pid{hashlib.sha256(str(i).encode()).hexdigest()[:12]}" for i in frame["id"]]
    rng = np.random.default_rng(7)
    for col in frame.columns:
        if col.startswith("x"):
            frame[col] = frame[col] + rng.uniform(1e-8, 9e-7, len(frame))
    keep = np.arange(len(frame)) % (13 if party == "bank" else 11) != 5
    frame[keep].to_csv(dest, index=False, float_format="%.9f")


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "GRPC_VERBOSITY": "ERROR"}
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@dataclass
class Netns:
    """A bridge in the test's namespace and one network namespace per worker, wired by veth pairs."""

    tag: str = field(default_factory=lambda: str(os.getpid() % 100000))
    subnet: str = field(default_factory=lambda: f"10.78.{os.getpid() % 250}")
    spaces: dict[str, str] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"slb{self.tag}"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.1"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def up(self) -> None:
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")

    def add(self, party: str, index: int) -> tuple[str, str]:
        ns, veth, ip = f"sl{self.tag}-{party}", f"v{self.tag}-{index}", f"{self.subnet}.{index + 2}"
        self._ip("netns", "add", ns)
        self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._ip("link", "set", veth, "master", self.bridge, "up")
        self._ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        self._ip("-n", ns, "link", "set", "eth0", "up")
        self._ip("-n", ns, "link", "set", "lo", "up")
        self.spaces[party] = ns
        return ns, ip

    def down(self) -> None:
        for ns in self.spaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@dataclass
class Platform:
    root: Path
    heartbeat_timeout: float = 10.0
    netns: Netns | None = None
    coordinator: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    url: str = ""
    port: int = 0

    @property
    def state(self) -> Path:
        return self.root / "coordinator"

    def start_coordinator(self) -> None:
        (self.state / "url").unlink(missing_ok=True)
        host = self.netns.host_ip if self.netns else "127.0.0.1"
        cmd = [
            sys.executable,
            "-m",
            "sharelearn",
            "coordinator",
            "--state-dir",
            str(self.state),
            "--host",
            host,
            "--port",
            str(self.port),
            "--heartbeat-timeout",
            str(self.heartbeat_timeout),
        ]
        self.state.mkdir(parents=True, exist_ok=True)
        self.coordinator = _spawn(cmd, self.root / "coordinator.log")
        deadline = time.monotonic() + 120  # a loaded CI box imports slowly
        while not (self.state / "url").is_file():
            if self.coordinator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "coordinator.log").read_text())
            time.sleep(0.05)
        self.url = (self.state / "url").read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            time.sleep(0.05)

    @property
    def admin(self) -> httpx.Client:
        token = (self.state / "admin.token").read_text().strip()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def token(self, party: str, cli: bool = False) -> str:
        """A one-time enrollment token: through `sharelearn coordinator token`, or in-process (faster)."""
        if not cli:
            _, identity = open_coordinator(CoordinatorOptions(self.state))
            return identity.enrollment_token(party)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "sharelearn",
                "coordinator",
                "--state-dir",
                str(self.state),
                "token",
                "--party",
                party,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        return out.stdout.strip()

    def data_dir(self, party: str) -> Path:
        d = self.root / f"{party}-data"
        d.mkdir(exist_ok=True)
        if DATA.get(party) and not (d / str(DATA[party])).exists():
            write_party_csv(DEMO / str(DATA[party]), d / str(DATA[party]), party)
        return d

    def start_worker(self, party: str, index: int, policy: str | None = APPROVE_ALL, token: str = "") -> None:
        data = self.data_dir(party)
        prefix, listen = [], f"127.0.0.{index + 2}"
        if self.netns is not None:  # its own network namespace, one veth to the coordinator's bridge
            ns = self.netns.spaces.get(party) or self.netns.add(party, index)[0]
            prefix, listen = ["ip", "netns", "exec", ns], f"{self.netns.subnet}.{index + 2}"
        cmd = [
            *prefix,
            sys.executable,
            "-m",
            "sharelearn",
            "worker",
            "--coordinator",
            self.url,
            "--party",
            party,
            "--data-dir",
            str(data),
            "--certs",
            str(self.root / f"{party}-certs"),
            "--listen-host",
            listen,
        ]
        if not (self.root / f"{party}-certs" / f"{party}.token").is_file():
            cmd += ["--enroll-token", token or self.token(party, cli=party == "bank")]
        if policy is not None:
            (self.root / f"{party}-policy.yaml").write_text(policy)
            cmd += ["--policy", str(self.root / f"{party}-policy.yaml")]
        self.workers[party] = _spawn(cmd, self.root / f"{party}-worker.log")

    def wait_parties(self, names: list[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = {p["party"]: p for p in self.admin.get("/api/v1/parties").json()}
            if all(n in seen and time.time() - seen[n]["last_heartbeat"] < 2 for n in names):
                return
            time.sleep(0.1)
        raise TimeoutError(f"workers {names} did not connect: " + self.logs())

    def submit(self, text: str) -> str:
        r = self.admin.post("/api/v1/jobs", content=text)
        assert r.status_code == 200, r.text
        return str(r.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.admin.get(f"/api/v1/jobs/{job_id}").json())

    def wait(
        self,
        job_id: str,
        states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
        timeout: float = 120,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.job(job_id)
            if j["state"] in states:
                return j
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} stayed {self.job(job_id)['state']}: " + self.logs())

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.root.glob("*.log")
        )

    def stop(self) -> None:
        for proc in self.workers.values():
            _stop(proc)
        if self.coordinator is not None:
            _stop(self.coordinator)
        if self.netns is not None:
            self.netns.down()
