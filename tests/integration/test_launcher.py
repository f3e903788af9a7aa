from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from sharelearn.interfaces.api import run_job
from sharelearn.runtime.certs import THROWAWAY_PREFIX
from sharelearn.runtime.control import ControlEvent, Listening, StepStarted

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(180)]


def _write_job(
    folder: Path, n: int, common: int, *, extra_b: str = "", timeout_s: float = 60, label: bool = False
) -> Path:
    rng = np.random.default_rng(n)
    ids = rng.choice(10**9, size=2 * n - common, replace=False) + 10**9
    a = np.concatenate([ids[:common], ids[common:n]])
    b = np.concatenate([ids[:common], ids[n:]])
    rng.shuffle(a)
    rng.shuffle(b)
    if label:
        (folder / "bank.csv").write_text(
            "id,x0,y\n" + "".join(f"{i},{k % 7},{k % 2}\n" for k, i in enumerate(a))
        )
    else:
        (folder / "bank.csv").write_text("id,x0\n" + "".join(f"{i},{k % 7}\n" for k, i in enumerate(a)))
    (folder / "shop.csv").write_text("id,x1\n" + "".join(f"{i},{k % 5}\n" for k, i in enumerate(b)) + extra_b)
    job = folder / "job.yaml"
    job.write_text(
        f"job: itest\ntimeout_s: {timeout_s}\nparties:\n"
        f"  bank: {{role: guest, data: {{path: bank.csv, id: id{', label: y' if label else ''}}}}}\n"
        "  shop: {role: host, data: {path: shop.csv, id: id}}\n"
        "  coord: {role: arbiter}\n"
        "steps:\n  - psi: {}\n"
    )
    return job


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharelearn", *args], cwd=cwd, capture_output=True, text=True, timeout=170
    )


def test_run_100k_ids_per_party_gives_exact_intersection_without_leaks(tmp_path: Path) -> None:
    job = _write_job(tmp_path, 100_000, 40_000)

    proc = _cli("run", str(job), "--json", "--report-dir", str(tmp_path / "report"), cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "success" and summary["error"] is None
    assert summary["steps"]["psi"]["intersection_size"] == 40_000
    assert summary["wire"]["leaks"] == 0 and summary["wire"]["bytes"] > 0
    pids = [p["pid"] for p in summary["parties"].values()]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert json.loads((tmp_path / "report" / "summary.json").read_text()) == summary
    assert {p.name for p in (tmp_path / "report" / "logs").iterdir()} == {"bank.log", "shop.log", "coord.log"}
    aligned = [
        (tmp_path / "report" / "parties" / p / "intersection_ids.csv").read_text() for p in ("bank", "shop")
    ]
    assert aligned[0] == aligned[1]


def test_party_killed_mid_job_fails_the_job_naming_it_and_leaves_no_process(tmp_path: Path) -> None:
    job = _write_job(tmp_path, 200_000, 1000)
    pids: dict[str, int] = {}

    def on_event(event: ControlEvent) -> None:
        if isinstance(event, Listening):
            pids[event.party] = event.pid
        if isinstance(event, StepStarted) and event.party == "shop":
            os.kill(pids["shop"], signal.SIGKILL)

    summary = run_job(job, report_dir=tmp_path / "report", on_event=on_event)

    assert summary["status"] == "failed"
    assert "'shop'" in summary["error"]
    assert set(pids) == {"bank", "shop", "coord"}
    assert not [p for p in pids.values() if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["status"] == "failed"
    assert not list((tmp_path / "report").rglob("*.tmp"))


def test_a_stopped_party_is_blamed_not_the_peer_whose_receive_timed_out(tmp_path: Path) -> None:
    job = _write_job(tmp_path, 200_000, 1000, timeout_s=2)
    pids: dict[str, int] = {}

    def on_event(event: ControlEvent) -> None:
        if isinstance(event, Listening):
            pids[event.party] = event.pid
        if isinstance(event, StepStarted) and event.party == "shop" and "stopped" not in pids:
            os.kill(pids["shop"], signal.SIGSTOP)
            pids["stopped"] = pids["shop"]

    summary = run_job(job, report_dir=tmp_path / "report", on_event=on_event)

    assert summary["status"] == "failed"
    assert summary["error"].startswith("party 'shop' failed: hung"), summary["error"]
    live = [p for p in pids.values() if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not live


def test_bad_data_file_fails_the_job_naming_party_file_and_column(tmp_path: Path) -> None:
    job = _write_job(tmp_path, 50, 10, extra_b="9999999999,notanumber\n")

    proc = _cli("run", str(job), "--json", "--report-dir", str(tmp_path / "report"), cwd=tmp_path)

    assert proc.returncode == 3  # the README's exit code for bad data, whichever party read it
    summary = json.loads(proc.stdout)
    assert summary["status"] == "failed" and summary["exit_code"] == 3
    assert summary["failed_party"] == "shop" and summary["error_type"] == "DataError"
    assert "'shop'" in summary["error"] and "shop.csv" in summary["error"] and "x1" in summary["error"]


def test_bad_job_file_is_refused_before_any_party_starts(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("job: x\nparties:\n  bank: {role: gust}\nsteps:\n  - psi: {}\n")

    proc = _cli("run", str(job), "--json", cwd=tmp_path)

    assert proc.returncode == 2
    assert "job.yaml" in proc.stderr and "role" in proc.stderr and "line 3" in proc.stderr
    summary = json.loads(proc.stdout)  # exactly one JSON object, even though no party started
    assert summary["status"] == "failed" and summary["exit_code"] == 2
    assert summary["error_type"] == "ConfigError" and "line 3" in summary["error"]
    assert proc.stdout.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "mode", "leaks"),
    [(["--no-audit"], "off", None), ([], "sample", 0), (["--audit", "full"], "full", 0)],
)
def test_audit_modes_say_what_they_checked(
    tmp_path: Path, flags: list[str], mode: str, leaks: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHARELEARN_AUDIT", raising=False)  # the CLI's own default, not the suite's
    job = _write_job(tmp_path, 50, 10)

    proc = _cli("run", str(job), "--json", *flags, "--report-dir", str(tmp_path / "r"), cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    wire = summary["wire"]
    assert summary["steps"]["psi"]["intersection_size"] == 10
    assert (wire["leaks"], wire["audit"]) == (leaks, mode)  # off: null, never a 0 nobody checked
    if mode == "off":
        assert wire["audit_coverage"] is None and not list((tmp_path / "r").rglob("audit.msgpack"))
    else:
        assert wire["audit_coverage"] == 1.0  # a small job is scanned whole within the budget
        assert mode == "full" or wire["audit_s"] <= 0.05 * summary["elapsed_s"] + 0.2


def test_a_failed_run_keeps_the_steps_that_had_finished(tmp_path: Path) -> None:
    job = _write_job(tmp_path, 300, 200, label=True)
    job.write_text(job.read_text() + "  - hetero_lr: {epochs: 50, batch_size: 16, key_bits: 1024}\n")
    pids: dict[str, int] = {}

    def on_event(event: ControlEvent) -> None:
        if isinstance(event, Listening):
            pids[event.party] = event.pid
        if isinstance(event, StepStarted) and event.step == "hetero_lr" and event.party == "shop":
            os.kill(pids["shop"], signal.SIGKILL)

    summary = run_job(job, report_dir=tmp_path / "report", on_event=on_event)

    assert summary["status"] == "failed" and summary["failed_party"] == "shop"
    assert summary["error_type"] == "PartyFailed" and summary["exit_code"] == 1
    assert list(summary["steps"]) == ["psi"] and summary["steps"]["psi"]["intersection_size"] == 200
    assert "shop" in summary["steps"]["psi"]["parties"]
    assert (tmp_path / "report" / "parties" / "bank" / "intersection_ids.csv").is_file()
    assert summary["wire"]["leaks"] is None


def test_demo_runs_from_the_embedded_data(tmp_path: Path) -> None:
    proc = _cli("demo", "--json", "--report-dir", str(tmp_path / "demo"), cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"]["psi"]["intersection_size"] == 569
    assert summary["wire"]["leaks"] == 0
    ev = summary["steps"]["evaluate"]
    assert ev["auc"] > 0.98 and ev["auc_delta"] <= 0.01
    assert {"auc", "auc_centralized", "auc_delta", "ks", "accuracy"} <= set(ev)
    assert summary["steps"]["hetero_lr"]["key_bits"] == 2048
    assert (tmp_path / "demo" / "loss_curve.png").is_file() and (tmp_path / "demo" / "roc.png").is_file()


def _start_cli_until_parties_run(job: Path, report: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start `sharelearn run --json` and wait until every party has started; return it and its keys."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharelearn", "run", str(job), "--json", "--report-dir", str(report)],
        cwd=job.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        keys = list(Path("/dev/shm").glob(f"{THROWAWAY_PREFIX}{proc.pid}-*"))
        parties = report / "parties"
        if keys and parties.is_dir() and len(list(parties.iterdir())) == 3:
            time.sleep(1.0)
            return proc, keys[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the parties did not start")


def _party_pids(launcher: int) -> list[int]:
    return [c.pid for c in psutil.Process(launcher).children(recursive=True) if "node" in c.cmdline()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signalled_launcher_writes_a_failed_summary_and_deletes_every_key(tmp_path: Path, sig: int) -> None:
    job = _write_job(tmp_path, 200_000, 1000)
    proc, keys = _start_cli_until_parties_run(job, tmp_path / "report")
    assert (keys / "ca.key").is_file() and (keys.stat().st_mode & 0o777) == 0o700
    parties = _party_pids(proc.pid)

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 128 + sig, err[-2000:]
    summary = json.loads(out)
    assert summary["status"] == "failed" and summary["exit_code"] == 128 + sig
    assert summary["failed_party"] == "launcher" and signal.Signals(sig).name in summary["error"]
    assert json.loads((tmp_path / "report" / "summary.json").read_text()) == summary
    assert not keys.exists()
    assert len(parties) == 3 and not [p for p in parties if psutil.pid_exists(p)]
    assert not list((tmp_path / "report").rglob("*.tmp"))


def test_sigkilled_launcher_leaves_no_key_behind(tmp_path: Path) -> None:
    job = _write_job(tmp_path, 200_000, 1000)
    proc, keys = _start_cli_until_parties_run(job, tmp_path / "report")

    proc.kill()
    proc.communicate(timeout=30)

    deadline = time.monotonic() + 10
    while keys.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not keys.exists()


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


_FULL_DISK_SCRIPT = """
mount -t tmpfs -o size=256k tmpfs "$R" || exit 99
"$PY" -m sharelearn run "$JOB" --json --report-dir "$R" > "$O/out.json" 2> "$O/err.txt"
echo $? > "$O/rc"
find "$R" -type f -size 0 > "$O/empty.txt"
find "$R" -name '*.tmp' > "$O/tmp.txt"
cp "$R/summary.json" "$O/summary.json"
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user+mount namespaces to mount a tiny tmpfs")
def test_full_disk_fails_clearly_with_a_summary_and_no_partial_files(tmp_path: Path) -> None:
    """A real full file system (not an injected error): the report folder is a 256 KiB tmpfs."""
    job = _write_job(tmp_path, 20_000, 1000)
    (tmp_path / "report").mkdir()
    env = {
        **os.environ,
        "R": str(tmp_path / "report"),
        "PY": sys.executable,
        "JOB": str(job),
        "O": str(tmp_path),
    }

    subprocess.run(["unshare", "-rm", "sh", "-c", _FULL_DISK_SCRIPT], env=env, cwd=tmp_path, timeout=170)

    assert (tmp_path / "rc").read_text().strip() == "3", (tmp_path / "err.txt").read_text()[-2000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["exit_code"] == 3
    assert "No space left on device" in summary["error"] and summary["error_type"] == "OutputWriteError"
    assert summary["failed_party"] in ("bank", "shop", "coord") and "report/parties" in summary["error"]
    assert (tmp_path / "empty.txt").read_text() == "" and (tmp_path / "tmp.txt").read_text() == ""
