"""`sharelearn bench fedavg`: the wall-time cost of secure aggregation over plain FedAvg.

Workload: default_credit_homo (guest + host_1 + host_2, 24,000 rows, 23 features) split IID into
N clients, an MLP 23 -> 1024 -> 72 -> 1 (98,449 parameters, the issue's ~100k), one local epoch per
round, batch 64, scored on default_credit_homo_test. For each N (10 and 100 by default) the same
rounds run in the same process and harness (`simulation.simulate`), alternating `--repeat` times:
plain FedAvg, then secure aggregation (SecAgg+ with `--neighbours` neighbours per client, in
Z_2^32 like Flower's SecAgg+). The same client leaves every round in both (under secagg after
sharing its keys, so dropout recovery is exercised). The figure is secagg / plain of the best
mean round time (target: <= 1.3 at 100 clients); `cpu_ratio` compares this process's CPU seconds,
steadier than wall time on a shared machine.

Flower's simulation of the same workload is not timed: `flwr` is not a dependency here, and the
row says whether it is importable (a comparison is not implemented yet).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.algorithms.horizontal.fedavg import FedAvgParams
from sharelearn.algorithms.horizontal.simulation import simulate
from sharelearn.runtime.data import PartyData
from sharelearn.testing.steps import load_csv

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fate"
HIDDEN = (1024, 72)


def _pooled() -> tuple[PartyData, PartyData]:
    parts = [
        load_csv(DATA / f"default_credit_homo_{p}.csv", label="y") for p in ("guest", "host_1", "host_2")
    ]
    x = np.vstack([p.x for p in parts])
    y = np.concatenate([np.asarray(p.y) for p in parts])
    ids = np.concatenate([p.ids for p in parts])
    pooled = PartyData(ids, x, y, parts[0].feature_names, Path("default_credit_homo_pooled"))
    return pooled, load_csv(DATA / "default_credit_homo_test.csv", label="y")


def _params(secure: bool, n: int, rounds: int, neighbours: int, compute: str) -> FedAvgParams:
    return FedAvgParams(
        model="mlp",
        hidden=HIDDEN,
        rounds=rounds,
        learning_rate=0.05,
        batch_size=64,
        secure_aggregation=secure,
        secagg_neighbours=neighbours if neighbours < n - 1 else 0,
        # Z_2^32 as Flower's SecAgg+ default; 16 fractional bits leave room for 100 summands.
        secagg_modulus_bits=32,
        secagg_frac_bits=16,
        # The same client leaves every round in both runs (after sharing its keys, under secagg).
        simulate_dropouts=("c0001:share",) if secure else ("c0001:update",),
        compute=compute,
        ray_cpus=os.cpu_count() or 2,
        ray_actors=os.cpu_count() or 2,
    )


def run_one(n: int, rounds: int, neighbours: int, compute: str, repeat: int) -> dict[str, Any]:
    pooled, test = _pooled()
    shards = np.array_split(np.random.default_rng(n).permutation(len(pooled)), n)
    clients = {f"c{k:04d}": pooled.take(np.sort(s)) for k, s in enumerate(shards)}
    row: dict[str, Any] = {"clients": n, "rounds": rounds, "compute": compute, "repeat": repeat}
    # Warm up (torch kernels, page cache) so neither timed run pays first-call costs.
    simulate(
        _params(False, n, 1, neighbours, "local"), dict(list(clients.items())[:2]), None, compute="local"
    )
    times: dict[str, list[float]] = {"plain": [], "secagg": []}
    cpu: dict[str, list[float]] = {"plain": [], "secagg": []}
    # Alternate plain and secure runs and keep each one's best: the machine may be shared.
    for _ in range(repeat):
        for label, secure in (("plain", False), ("secagg", True)):
            t, c = time.perf_counter(), time.process_time()
            result = simulate(_params(secure, n, rounds, neighbours, compute), clients, test, compute=compute)
            row[f"{label}_wall_s"] = round(time.perf_counter() - t, 3)
            cpu[label].append(time.process_time() - c)
            times[label].append(result.outputs["round_time_s"])
            row[f"{label}_test_auc"] = result.outputs.get("test_auc")
            row["parameters"] = result.outputs["parameters"]
            row[f"{label}_dropouts"] = result.outputs["dropouts"]
    for label, values in times.items():
        row[f"{label}_round_s"] = min(values)
        row[f"{label}_round_s_all"] = values
    row["secagg_neighbours"] = neighbours if neighbours < n - 1 else n - 1
    row["round_time_ratio"] = round(row["secagg_round_s"] / row["plain_round_s"], 3)
    # CPU seconds of this process (all the work when compute is local): steadier on a busy machine.
    row["cpu_ratio"] = round(min(cpu["secagg"]) / min(cpu["plain"]), 3) if compute == "local" else None
    row["flower"] = (
        "flwr not installed: no comparison"
        if importlib.util.find_spec("flwr") is None
        else "flwr installed: comparison not implemented yet"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench fedavg", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,100", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=16, help="SecAgg+ neighbours per client")
    parser.add_argument("--compute", choices=("local", "ray"), default="local")
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode; the best round time counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    rows = [
        run_one(int(n), args.rounds, args.neighbours, args.compute, args.repeat)
        for n in args.clients.split(",")
    ]
    if args.json:
        print(json.dumps({"benchmark": "fedavg", "rows": rows}))
        return 0
    for r in rows:
        print(
            f"{r['clients']:4d} clients, {r['parameters']} params, {r['rounds']} rounds ({r['compute']}): "
            f"plain {r['plain_round_s']:.3f} s/round, secagg {r['secagg_round_s']:.3f} s/round "
            f"(k={r['secagg_neighbours']}), ratio {r['round_time_ratio']:.2f}x (CPU time {r['cpu_ratio']}x); "
            f"AUC plain {r['plain_test_auc']:.4f} secagg {r['secagg_test_auc']:.4f}; {r['flower']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
