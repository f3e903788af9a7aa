"""`sharelearn bench serving`: online scoring latency, guest + 1 host processes on loopback (mTLS).

For hetero_lr and secureboost (100 trees, depth 5 by default) trained on scikit-learn's breast
cancer set (guest 10 columns with the label, host 20 columns), it starts one host and one guest
serving process and measures, from a client in this process:

* single-row requests at a steady rate (default 500/s for 30 s), open loop: each request's latency
  counts from the moment it was due, so a stall is not hidden by the requests it delays;
* throughput with batches of 256 rows, back to back;
* the in-process scoring time of the same model (host partial + guest score, no network) as the
  baseline, in the same run.

Targets (issue 20): hetero_lr p50 <= 3 ms, p99 <= 15 ms; secureboost p50 <= 5 ms, p99 <= 25 ms;
zero errors. `--json` prints one object with, per model, p50_ms, p99_ms, errors and requests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.datasets import load_breast_cancer

from sharelearn.algorithms.package import load_package, model_path
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams
from sharelearn.algorithms.vertical.secureboost import SecureBoostParams
from sharelearn.runtime.certs import init_certs
from sharelearn.runtime.serving.scoring import guest_scorer, host_scorer
from sharelearn.testing.steps import dataset, run_steps

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]


def _tables() -> dict[str, Any]:
    b = load_breast_cancer()
    x = (b.data - b.data.mean(axis=0)) / b.data.std(axis=0)
    ids = np.array([f"c{i:05d}" for i in range(len(x))])
    bank = dataset(ids.tolist(), x[:, :10], b.target.astype(float), name="bank.csv")
    shop = dataset(ids.tolist(), x[:, 10:], name="shop.csv")
    from dataclasses import replace

    return {
        "bank": ("guest", bank),
        "shop": ("host", replace(shop, feature_names=tuple(f"s{k}" for k in range(20)))),
    }


def _train(step: str, args: argparse.Namespace, work: Path) -> dict[str, Path]:
    parties = _tables()
    if step == "hetero_lr":
        params: Any = HeteroLrParams(epochs=5, batch_size=0, key_bits=1024, mode="two_party", seed=1)
    else:
        params = SecureBoostParams(num_trees=args.trees, max_depth=args.depth, max_bins=16, key_bits=1024)
    run_steps(parties, [(step, params)], work / step, aligned=True, timeout=3600)
    return {p: model_path(work / step / p, step) for p in parties}


def _spawn(args: list[str], ready: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharelearn", *args, "--ready-file", str(ready)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    end = time.monotonic() + 300
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise RuntimeError(f"{args[:2]} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def _steady(
    url: str, bodies: list[dict[str, Any]], rate: float, seconds: float, workers: int
) -> dict[str, Any]:
    """Open-loop single-row requests at `rate`/s; latency from each request's due time."""
    total = int(rate * seconds)
    lat = np.full(total, np.nan)
    errors = [0] * workers
    t0 = time.perf_counter() + 0.2

    def work(w: int) -> None:
        with httpx.Client(timeout=5.0) as client:
            for i in range(w, total, workers):
                due = t0 + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                try:
                    r = client.post(url, json=bodies[i % len(bodies)])
                    ok = r.status_code == 200 and not r.json()["errors"]
                except httpx.HTTPError:
                    ok = False
                lat[i] = (time.perf_counter() - due) * 1000.0
                errors[w] += 0 if ok else 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "p50_ms": round(float(np.nanpercentile(lat, 50)), 3),
        "p99_ms": round(float(np.nanpercentile(lat, 99)), 3),
        "errors": sum(errors),
        "requests": total,
        "rate_rps": rate,
        "seconds": seconds,
    }


def _body(table: Any, rows: np.ndarray) -> dict[str, Any]:
    x = np.asarray(table.x)[rows]
    return {
        "ids": [str(i) for i in np.asarray(table.ids)[rows]],
        "features": {n: x[:, k].tolist() for k, n in enumerate(table.feature_names)},
    }


def _batches(url: str, table: Any, seconds: float) -> float:
    bodies = [_body(table, np.arange(s, s + 256) % len(table)) for s in range(0, 2048, 256)]
    rows, end = 0, time.perf_counter() + seconds
    with httpx.Client(timeout=10.0) as client:
        start = time.perf_counter()
        while time.perf_counter() < end:
            r = client.post(url, json=bodies[rows // 256 % len(bodies)])
            r.raise_for_status()
            rows += 256
        return rows / (time.perf_counter() - start)


def _in_process_ms(packages: dict[str, Path], tables: dict[str, Any]) -> float:
    """Median time to score one row with both parts in this process (no network, no HTTP)."""
    g, h = guest_scorer(load_package(packages["bank"])), host_scorer(load_package(packages["shop"]))
    xg, xh = np.asarray(tables["bank"][1].x), np.asarray(tables["shop"][1].x)
    times = []
    for i in range(2000):
        r = i % len(xg)
        t = time.perf_counter()
        g.score(xg[r : r + 1], [h.partial(xh[r : r + 1])])
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1000.0, 4)


def _bench_model(step: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    packages = _train(step, args, work)
    tables = _tables()
    certs = work / f"{step}-certs"
    init_certs(["bank", "shop"], certs)
    model = load_package(packages["bank"]).identity.model_id
    shop_csv = work / f"{step}-shop.csv"
    t = tables["shop"][1]
    shop_csv.write_text(
        "id,"
        + ",".join(t.feature_names)
        + "\n"
        + "".join(
            f"{i}," + ",".join(repr(float(v)) for v in row) + "\n"
            for i, row in zip(t.ids, np.asarray(t.x), strict=True)
        )
    )
    procs = []
    try:
        host, hready = _spawn(
            [
                "serve",
                "host",
                "--model",
                model,
                "--party",
                "shop",
                "--models",
                str(packages["shop"].parent),
                "--features",
                str(shop_csv),
                "--certs",
                str(certs),
            ],
            work / f"{step}-h.json",
            work / f"{step}-h.log",
        )
        procs.append(host)
        guest, gready = _spawn(
            [
                "serve",
                "guest",
                "--model",
                model,
                "--party",
                "bank",
                "--models",
                str(packages["bank"].parent),
                "--certs",
                str(certs),
                "--http",
                "127.0.0.1:0",
                "--max-batch",
                "256",
                "--host",
                f"shop=127.0.0.1:{hready['grpc_port']}",
            ],
            work / f"{step}-g.json",
            work / f"{step}-g.log",
        )
        procs.append(guest)
        url = f"http://127.0.0.1:{gready['http_port']}/v1/models/{model}/predict"
        bank = tables["bank"][1]
        singles = [_body(bank, np.array([i])) for i in range(len(bank))]
        _steady(url, singles, args.rate, min(2.0, args.seconds), args.workers)  # warm-up, not reported
        out = _steady(url, singles, args.rate, args.seconds, args.workers)
        out["batch256_rows_per_s"] = round(_batches(url, bank, args.batch_seconds), 1)
        out["in_process_ms_per_row"] = _in_process_ms(packages, tables)
        return out
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench serving", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hetero_lr,secureboost")
    parser.add_argument("--rate", type=float, default=500.0, help="single-row requests per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=16, help="client threads of the load generator")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        for step in [m.strip() for m in args.models.split(",") if m.strip()]:
            result[step] = _bench_model(step, args, Path(tmp))
            if not args.json:
                print(step, json.dumps(result[step]), flush=True)
    if args.json:
        print(json.dumps(result))
    return 0
