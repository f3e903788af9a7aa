"""`sharelearn bench fedavg`: the wall-time cost of secure aggregation over plain FedAvg.

Workload: default_credit_homo (guest + host_1 + host_2, 24,000 rows, 23 features) split IID into
N clients, an MLP 23 -> 1024 -> 72 -> 1 (98,449 parameters, the issue's ~100k), one local epoch per
round, batch 64, scored on default_credit_homo_test. For each N (10 and 100 by default) the same
rounds run in the same process and harness (`simulation.simulate`), alternating `--repeat` times:
plain FedAvg, then secure aggregation (SecAgg+ with `--neighbours` neighbours per client, in
Z_2^32 like Flower's SecAgg+). The same client leaves every round in both (under secagg after
sharing its keys, so dropout recovery is exercised). The figure is secagg / plain of the best
mean round time over the rounds after the first (target: <= 1.3 at 100 clients; on Ray the first
round also pays the actors' start-up, and Flower's figure below leaves out its first round too);
`cpu_ratio` compares this process's CPU seconds, steadier than wall time on a shared machine.
`--kernels` times one client's secure-aggregation kernels instead, every backend in the same run:
the masks (fused numba + ipp kernel, ipp keystreams added one at a time, OpenSSL's), the X25519
agreements (multi-buffer, OpenSSL) and the Shamir sharing.

Flower: when Flower's own venv exists (`.venv-flower`, made by `benchmarks/envs/flower.sh`, or
`--flower-python PATH`), `benchmarks/flower_workload.py` runs there as a subprocess after our runs,
on the same workload (same data split, MLP, rounds, local epoch, batch, learning rate, weighting
and server-side test AUC; Flower's Ray simulation with one CPU per client and as many CPUs as our
run uses: 1 for `--compute local`, `simulation.ray_cpus` for `--compute ray`), twice per row: plain FedAvg,
then under Flower's own SecAgg+ with S = our share holders per client (neighbours + itself; n for
the full graph) and T = our threshold t (both from `secagg_config`), the same client leaving after
sharing its keys every round. `flower_ratio` = our plain round time / Flower's (its steady rounds:
its first pays Ray actor start-up), `secagg_vs_flower` = our secagg round time / Flower's plain
one, `secagg_vs_flower_secagg` = ours / Flower's secure one, and `flower_secagg_overhead` =
Flower's secure / Flower's plain. What differs between the two secure runs (Flower's clipping and
quantisation, its mask PRG) is in `flower_workload.py`'s docstring. flwr[simulation] pins
ray/typer/protobuf versions that conflict with ours, hence the separate venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.algorithms.horizontal.fedavg import FedAvgParams, baseline_fedavg, secagg_config
from sharelearn.algorithms.horizontal.options import SecAggOptions, SimulationOptions
from sharelearn.algorithms.horizontal.simulation import simulate
from sharelearn.runtime.data import PartyData
from sharelearn.testing.steps import load_csv

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fate"
HIDDEN = (1024, 72)
_HIDDEN_PARAMS = 23 * 1024 + 1024 + 1024 * 72 + 72 + 72 + 1  # 98,449: the MLP on 23 features


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
        # Z_2^32 as Flower's SecAgg+ default; 16 fractional bits leave room for 100 summands.
        secagg=SecAggOptions(
            neighbours=neighbours if neighbours < n - 1 else 0, modulus_bits=32, frac_bits=16
        ),
        # The same client leaves every round in both runs (after sharing its keys, under secagg).
        simulate_dropouts=("c0001:share",) if secure else ("c0001:update",),
        simulation=SimulationOptions(
            compute="ray" if compute == "ray" else "local",
            ray_cpus=os.cpu_count() or 2,
            ray_actors=os.cpu_count() or 2,
        ),
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
            times[label].append(result.outputs["steady_round_time_s"])
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
    return row


def _median_us(fn: Any, calls: int) -> float:
    fn()  # first call: JIT load, buffers, key setup
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e6, 1)


def kernel_figures(neighbours: int, calls: int) -> dict[str, Any]:
    """One client's secure-aggregation kernels at this benchmark's shape, each backend in turn.

    Masks: the self mask and `neighbours` pairwise masks over the 98,453-word update (the fused
    numba + ipp kernel against ipp's keystreams added one at a time by numpy, and OpenSSL's); key
    agreement: 2 x `neighbours` X25519 (multi-buffer against OpenSSL); Shamir: s_sk and b shared
    among neighbours + 1 holders with SecAgg+'s threshold.
    """
    from sharelearn.crypto import maskadd, shamir, x25519
    from sharelearn.crypto.kernels import mbx

    length = _HIDDEN_PARAMS + 4
    keys = [os.urandom(16) for _ in range(neighbours + 1)]
    signs = [1 if j % 2 == 0 else -1 for j in range(len(keys))]
    counter = bytes(12) + b"\x00\x00\x00\x02"
    y = np.zeros(length, dtype=np.uint32)
    out: dict[str, Any] = {"words": length, "masks": len(keys), "agreements": 2 * neighbours}
    for name, fused, portable in (("fused", True, False), ("ipp", False, False), ("openssl", False, True)):
        mbx.force_portable(portable)
        maskadd.set_fused(fused)
        try:
            adder = maskadd.MaskAdder(length, np.uint32)
            if adder.backend == name:
                out[f"mask_{name}_us"] = _median_us(lambda a=adder: a.add(y, keys, signs, counter), calls)
        finally:
            mbx.force_portable(False)
            maskadd.set_fused(True)
    rows = np.frombuffer(os.urandom(64 * neighbours), dtype=np.uint8).reshape(-1, 32)
    points = x25519.scalarmult_each(
        rows, np.tile(np.frombuffer(bytes([9] + [0] * 31), np.uint8), (len(rows), 1))
    )
    for name, portable in (("mbx", False), ("openssl", True)):
        mbx.force_portable(portable)
        try:
            if x25519.backend_name() == name:
                out[f"x25519_{name}_us"] = _median_us(lambda: x25519.scalarmult_each(rows, points), calls)
        finally:
            mbx.force_portable(False)
    n = 100
    t = secagg_config(_params(True, n, 1, neighbours, "local"), n, length, 0).threshold
    elements = np.concatenate(
        [shamir.bytes_to_elements(os.urandom(32)), shamir.bytes_to_elements(os.urandom(16))]
    )
    holders = list(range(1, neighbours + 2))
    out["shamir_elements"], out["shamir_threshold"] = int(elements.size), t
    out["shamir_split_us"] = _median_us(lambda: shamir.split_at(elements, holders, t), calls)
    for other in ("ipp", "openssl"):
        if f"mask_{other}_us" in out and "mask_fused_us" in out:
            out[f"mask_{other}_vs_fused"] = round(out[f"mask_{other}_us"] / out["mask_fused_us"], 2)
    if "x25519_mbx_us" in out and "x25519_openssl_us" in out:
        out["x25519_openssl_vs_mbx"] = round(out["x25519_openssl_us"] / out["x25519_mbx_us"], 2)
    return out


def vehicle_spread(seeds: list[int], rounds: int) -> dict[str, Any]:
    """The issue's vehicle_scale_homo MLP check over several seeds: federated vs centralised accuracy.

    guest and host as clients, the test file as the server's test set, the integration test's job
    (MLP [64], Adam 0.01, batch 32, 2 local epochs, secure aggregation), in-process with the same
    client and server code; the centralised twin is `baseline_fedavg` (the same model and optimiser,
    rounds * local_epochs epochs on the pooled rows), as the job's `accuracy_delta` uses.
    """
    parts = {p: load_csv(DATA / f"vehicle_scale_homo_{p}.csv", label="y") for p in ("guest", "host", "test")}
    rows = []
    for seed in seeds:
        params = FedAvgParams(
            model="mlp",
            hidden=(64,),
            rounds=rounds,
            local_epochs=2,
            optimizer="adam",
            learning_rate=0.01,
            batch_size=32,
            secure_aggregation=True,
            seed=seed,
        )
        clients = {"guest": parts["guest"], "host": parts["host"]}
        fed = simulate(params, clients, parts["test"], compute="local").outputs["test_accuracy"]
        roles = {"agg": ("server", parts["test"]), **{c: ("client", d) for c, d in clients.items()}}
        central = baseline_fedavg(params, roles)["accuracy"]
        rows.append({"seed": seed, "federated": fed, "central": central, "delta": round(central - fed, 4)})
    deltas = [r["delta"] for r in rows]
    return {"rounds": rounds, "seeds": rows, "max_delta": max(deltas), "mean_delta": float(np.mean(deltas))}


DEFAULT_FLOWER_PYTHON = Path(__file__).resolve().parents[1] / ".venv-flower" / "bin" / "python"


def flower_figures(
    python: Path, n: int, rounds: int, cpus: int, secagg: tuple[int, int, int | None] | None = None
) -> dict[str, Any]:
    """Run `flower_workload.py` in Flower's venv; its JSON, or {"error": ...}.

    `secagg` = (num_shares, reconstruction_threshold, dropped client or None) runs Flower's SecAgg+.
    """
    script = Path(__file__).resolve().with_name("flower_workload.py")
    cmd = [str(python), str(script), "--data", str(DATA), "--clients", str(n), "--rounds", str(rounds)]
    cmd += ["--cpus", str(cpus), "--hidden", ",".join(str(h) for h in HIDDEN)]
    if secagg is not None:
        shares, threshold, dropped = secagg
        cmd += ["--secagg-shares", str(shares), "--secagg-threshold", str(threshold)]
        cmd += [] if dropped is None else ["--drop-client", str(dropped)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{python}: {exc}"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"flower_workload exited {done.returncode}: {done.stderr.strip()[-400:]}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return {"error": f"flower_workload printed no JSON ({exc}): {lines[-1][:200]}"}
    return result


def flower_secagg_shape(n: int, neighbours: int) -> tuple[int, int, int | None]:
    """Flower SecAgg+'s (num_shares, reconstruction_threshold, dropped partition) for our secure run.

    num_shares is our share holders per client (its neighbours and itself; n for the full graph) and
    the threshold our t, both as `secagg_config` derives them for the round; the dropped partition
    is the client our run drops after sharing its keys (c0001 -> 1).
    """
    params = _params(True, n, 1, neighbours, "local")
    cfg = secagg_config(params, n, 1, 0)
    shared = [c for c, stage in params.dropouts().items() if stage == "share"]
    return cfg.holders, cfg.threshold, int(shared[0].lstrip("c")) if shared else None


def add_flower(row: dict[str, Any], python: Path | None) -> None:
    """Add Flower's plain and SecAgg+ round times for the row's workload and our ratios to them.

    Each Flower run reports its own failure; a failed one leaves the other's figures and ours alone.
    """
    if python is None:
        row["flower"] = row["flower_secagg"] = (
            "not run: no .venv-flower (make it with `bash benchmarks/envs/flower.sh`, "
            "or pass --flower-python PATH)"
        )
        return
    cpus = 1 if row["compute"] == "local" else (os.cpu_count() or 2)
    plain = flower_figures(python, row["clients"], row["rounds"], cpus)
    row["flower"] = plain
    if "round_time_s" in plain:
        row["flower_ratio"] = round(row["plain_round_s"] / plain["round_time_s"], 3)
        row["secagg_vs_flower"] = round(row["secagg_round_s"] / plain["round_time_s"], 3)
    shape = flower_secagg_shape(row["clients"], row["secagg_neighbours"])
    secure = flower_figures(python, row["clients"], row["rounds"], cpus, secagg=shape)
    row["flower_secagg"] = secure
    if "round_time_s" in secure:
        row["secagg_vs_flower_secagg"] = round(row["secagg_round_s"] / secure["round_time_s"], 3)
        if "round_time_s" in plain:
            row["flower_secagg_overhead"] = round(secure["round_time_s"] / plain["round_time_s"], 3)


def _flower_plain_text(r: dict[str, Any]) -> str:
    f = r["flower"]
    if "error" in f:
        return f"Flower failed: {f['error']}"
    return (
        f"Flower {f['flwr']} ({f['cpus']} CPU) {f['round_time_s']:.3f} s/round "
        f"(first {f['first_round_s']:.2f} s), "
        f"AUC {f['test_auc']:.4f}: ours plain / Flower {r['flower_ratio']:.2f}x, "
        f"secagg / Flower plain {r['secagg_vs_flower']:.2f}x"
    )


def _flower_secagg_text(r: dict[str, Any]) -> str:
    f = r.get("flower_secagg")
    if f is None or isinstance(f, str):
        return ""
    if "error" in f:
        return f"; Flower SecAgg+ failed: {f['error']}"
    sa = f.get("secagg", {})
    dropped = max(sa.get("dropouts_per_round", []), default=0)
    overhead = r.get("flower_secagg_overhead")
    return (
        f"; Flower SecAgg+ (S={sa.get('num_shares', '?')}, T={sa.get('reconstruction_threshold', '?')}, "
        f"{dropped} dropout/round) {f['round_time_s']:.3f} s/round (first {f['first_round_s']:.2f} s), "
        f"AUC {f['test_auc']:.4f}: ours secagg / Flower secagg {r['secagg_vs_flower_secagg']:.2f}x, "
        f"Flower secagg / Flower plain {'n/a' if overhead is None else f'{overhead:.2f}x'}"
    )


def _flower_text(r: dict[str, Any]) -> str:
    if isinstance(r["flower"], str):
        return f"Flower {r['flower']}"
    return _flower_plain_text(r) + _flower_secagg_text(r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench fedavg", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,100", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=16, help="SecAgg+ neighbours per client")
    parser.add_argument("--compute", choices=("local", "ray"), default="local")
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode; the best round time counts")
    parser.add_argument(
        "--flower-python",
        type=Path,
        default=None,
        help="python of a venv with flwr[simulation] (default: .venv-flower/bin/python when it exists;"
        " make it with benchmarks/envs/flower.sh)",
    )
    parser.add_argument("--no-flower", action="store_true", help="skip Flower even when .venv-flower exists")
    parser.add_argument(
        "--vehicle-seeds",
        default=None,
        help="instead of timing: vehicle_scale_homo MLP accuracy vs centralised for these seeds (e.g. 0,1,2)",
    )
    parser.add_argument("--vehicle-rounds", type=int, default=200, help="rounds for --vehicle-seeds")
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="instead of timing rounds: one client's mask, key-agreement and Shamir kernels, each backend",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.kernels:
        figures = kernel_figures(args.neighbours, calls=200)
        if args.json:
            print(json.dumps({"benchmark": "fedavg-kernels", **figures}))
            return 0
        masks = ", ".join(
            f"{b} {figures[f'mask_{b}_us']:.0f} us"
            for b in ("fused", "ipp", "openssl")
            if f"mask_{b}_us" in figures
        )
        agree = ", ".join(
            f"{b} {figures[f'x25519_{b}_us']:.0f} us"
            for b in ("mbx", "openssl")
            if f"x25519_{b}_us" in figures
        )
        print(f"{figures['masks']} masks over {figures['words']} words: {masks}")
        print(f"{figures['agreements']} X25519 agreements: {agree}")
        print(
            f"Shamir: {figures['shamir_elements']} elements to {args.neighbours + 1} holders, "
            f"t = {figures['shamir_threshold']}: {figures['shamir_split_us']:.0f} us"
        )
        return 0
    if args.vehicle_seeds:
        spread = vehicle_spread([int(s) for s in args.vehicle_seeds.split(",")], args.vehicle_rounds)
        if args.json:
            print(json.dumps({"benchmark": "fedavg-vehicle", **spread}))
            return 0
        for r in spread["seeds"]:
            print(
                f"seed {r['seed']}: federated {r['federated']:.4f}, centralised {r['central']:.4f}, "
                f"delta {r['delta']:+.4f}"
            )
        print(
            f"{spread['rounds']} rounds: max delta {spread['max_delta']:+.4f}, "
            f"mean {spread['mean_delta']:+.4f}"
        )
        return 0
    flower = args.flower_python or (DEFAULT_FLOWER_PYTHON if DEFAULT_FLOWER_PYTHON.exists() else None)
    rows = [
        run_one(int(n), args.rounds, args.neighbours, args.compute, args.repeat)
        for n in args.clients.split(",")
    ]
    for row in rows:  # after all our runs, so Flower's Ray does not share the machine with them
        if args.no_flower:
            row["flower"] = row["flower_secagg"] = "not run (--no-flower)"
        else:
            add_flower(row, flower)
    if args.json:
        print(json.dumps({"benchmark": "fedavg", "rows": rows}))
        return 0
    for r in rows:
        cpu = "n/a on ray" if r["cpu_ratio"] is None else f"{r['cpu_ratio']}x"
        print(
            f"{r['clients']:4d} clients, {r['parameters']} params, {r['rounds']} rounds ({r['compute']}): "
            f"plain {r['plain_round_s']:.3f} s/round, secagg {r['secagg_round_s']:.3f} s/round "
            f"(k={r['secagg_neighbours']}), ratio {r['round_time_ratio']:.2f}x (CPU time {cpu}); "
            f"AUC plain {r['plain_test_auc']:.4f} secagg {r['secagg_test_auc']:.4f}; {_flower_text(r)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
