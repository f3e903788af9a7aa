"""`sharelearn bench mpc [--json]`: the ss engine's operators and ss_lr, in threads and in processes.

Cases (two computing parties and a dealer; seconds, bytes sent by both parties, rounds of party 0):

* matmul: shared 1000 x 1000 @ 1000 x 1000 (one matrix Beaver triple, dealt before the clock
  starts: `offline_seconds`; both parties then pass a barrier). The local ring product runs as
  int8 GEMMs when torch is installed (`ss_arith.ring_matmul`), else as float64 GEMMs.
* sigmoid: 1M sigmoids with `minimax_unclipped` and `taylor` (pure Beaver arithmetic), and
  `--clip-n` (default 100k) with `minimax` (clipped to [-8, 8] by one garbled pass of two 64-bit
  sign tests, bounded on all reals).
* relu / lt: 100k garbled ReLUs and comparisons, exact on the whole ring (64-bit sign circuit);
  relu_narrow / lt_narrow: the same with a 41-bit sign circuit (exact for |x| < 2^24).
* lr: logistic regression on 10,000 x 20 shared rows, 10 full-batch epochs (`minimax_unclipped`
  sigmoid), with the training accuracy of the revealed model.
* ss_lr: one `ss_lr` epoch on default_credit (30,000 rows) in threads (`run_steps`, psi
  included) and across processes over gRPC + mTLS (the launcher, `run_job`): `seconds` is the
  guest's and host's `ss_lr` step time; `seconds_incl_dealer` the dealer's, whose clock also runs
  while the others do `psi`.

The baseline measured in the same run is the plaintext engine (`PlainOps`, numpy float64) on the
same operation: `ratio` = ss / plain. SPU 0.9.5's SEMI2K simulation (2 parties, FM64) is timed in
the same run on matmul, 1M sigmoids and the LR case when its separate venv exists
(`.venv-spu`, made by `benchmarks/envs/spu.sh`, or `--spu-python PATH`): `benchmarks/spu_workload.py`
runs there as a subprocess after our cases, and `ratio_vs_spu` = ours (threads) / SPU.
Operator cases run in threads by default, each computing party's GEMMs on its share of the cores
(`_gemm_threads`), as in separate processes; `--processes` also runs them over gRPC + mTLS.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.core.link import Link
from sharelearn.crypto.fixedpoint import FixedPoint
from sharelearn.operators.plain import PlainOps
from sharelearn.operators.ss_arith import SSOps, ring_matmul
from sharelearn.operators.triples import DealerTripleSource, matmul_spec, run_dealer

__all__ = ["main", "run"]

P0, P1, DEALER = "p0", "p1", "dealer"
FATE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fate"


def _dealer(link: Link) -> int:
    return run_dealer(link, party0=P0, party1=P1)


def _inputs(case: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(n)
    if case == "matmul":
        return rng.uniform(-1, 1, (n, n)), rng.uniform(-1, 1, (n, n))
    if case == "lt":
        return rng.uniform(-10, 10, n), rng.uniform(-10, 10, n)
    if case == "lr":
        x = rng.normal(size=(n, 20))
        y = (x @ rng.normal(size=20) + 0.5 * rng.normal(size=n) > 0).astype(np.float64)
        return x, y
    return rng.uniform(-10, 10, n), None


def _op(engine: SSOps, case: str, x: Any, y: Any) -> Any:
    if case == "matmul":
        return engine.matmul(x, y)
    if case.startswith("sigmoid_"):
        return engine.sigmoid(x, case.removeprefix("sigmoid_"))
    if case == "relu":
        return engine.relu(x)
    if case == "lt":
        return engine.lt(x, y)
    raise ValueError(case)


NARROW_BITS = 41  # "_narrow" cases: sign circuits on 41 share bits, exact for |x| < 2^24 (f = 16)
LR_SIGMOID = "minimax_unclipped"  # pure Beaver arithmetic, like SPU's polynomial sigmoids


def _train_lr(engine: SSOps, x: Any, y: Any, epochs: int = 10, lr: float = 1.0) -> Any:
    n, d = x.shape
    w = np.zeros((d, 1), dtype=np.uint64)
    for _ in range(epochs):
        p = engine.sigmoid(engine.matmul(x, w), LR_SIGMOID)
        g = engine.matmul(np.ascontiguousarray(x.T), engine.sub(p, y))
        w = engine.sub(w, engine.mul_public(g, lr / n))
    return w


def _role(link: Link, *, index: int, case: str, n: int) -> dict[str, Any]:
    """One computing party: share the inputs, warm up, then time the operation alone."""
    peer = P1 if index == 0 else P0
    cmp_bits = NARROW_BITS if case.endswith("_narrow") else 64
    case = case.removesuffix("_narrow")
    source = DealerTripleSource(link, dealer=DEALER, index=index)
    engine = SSOps(link, peer=peer, index=index, triples=source, cmp_bits=cmp_bits)
    x, y = _inputs(case, n)
    if case == "lr":
        x = np.hstack([x, np.ones((n, 1))])
        xs = engine.share(x if index == 0 else None, owner=0, shape=x.shape)
        ys = engine.share(y.reshape(-1, 1) if index == 0 else None, owner=0, shape=(n, 1))  # type: ignore[union-attr]
    else:
        xs = engine.share(x if index == 0 else None, owner=0, shape=x.shape)
        ys = None if y is None else engine.share(y if index == 1 else None, owner=1, shape=y.shape)
    if case in ("relu", "lt", "sigmoid_minimax"):
        engine.relu(xs[:8])  # base OTs once per session, as any long-running party would
    if case == "matmul":  # load the GEMM libraries (torch) once, as any long-running party would
        ring_matmul(np.ones((256, 256), dtype=np.uint64), np.ones((256, 256), dtype=np.uint64))
    offline = time.perf_counter()
    if case == "matmul":  # the dealer's matrix triple is offline work: fetch it before timing
        engine.triples.prefetch([matmul_spec(n, n, n)])  # type: ignore[attr-defined]
    offline = time.perf_counter() - offline
    # barrier: party 1's prefetch ends only when the dealer has computed c; start both clocks after it
    engine.open_ring(np.zeros(1, dtype=np.uint64))
    before, t0 = engine.stats.as_dict(), time.perf_counter()
    out = _train_lr(engine, xs, ys) if case == "lr" else _op(engine, case, xs, ys)
    seconds = time.perf_counter() - t0
    after = engine.stats.as_dict()
    result: dict[str, Any] = {
        "seconds": seconds,
        "offline_seconds": offline,
        "bytes": after["bytes_sent"] - before["bytes_sent"],
        "rounds": after["rounds"] - before["rounds"],
    }
    if case == "lr":
        w = engine.reveal(out)
        if index == 0 and w is not None:
            result["train_accuracy"] = float(np.mean(((x @ w).reshape(-1) > 0) == (y > 0.5)))  # type: ignore[operator]
    engine.triples.close()  # type: ignore[attr-defined]
    return result


def _plain_seconds(case: str, n: int) -> float:
    case = case.removesuffix("_narrow")
    ops, (x, y) = PlainOps(), _inputs(case, n)
    t0 = time.perf_counter()
    if case == "matmul":
        ops.matmul(x, y)
    elif case.startswith("sigmoid_"):
        ops.sigmoid(x, case.removeprefix("sigmoid_"))
    elif case == "relu":
        ops.relu(x)
    elif case == "lt":
        ops.lt(x, y)  # type: ignore[arg-type]
    else:
        xx, w = np.hstack([x, np.ones((n, 1))]), np.zeros(21)
        for _ in range(10):
            w -= 1.0 / n * xx.T @ (ops.sigmoid(xx @ w, LR_SIGMOID) - y)  # type: ignore[operator]
    return time.perf_counter() - t0


SPU_CASES = {
    "matmul": "matmul",
    "sigmoid_minimax_unclipped": "sigmoid",
    "sigmoid_taylor": "sigmoid",
    "lr": "lr",
}
DEFAULT_SPU_PYTHON = Path(__file__).resolve().parents[1] / ".venv-spu" / "bin" / "python"


def _spu_figures(python: Path, cases: list[str], sigmoid_n: int) -> dict[str, Any]:
    """Run `spu_workload.py` in SPU's own venv; returns its JSON (or {"error": ...})."""
    import subprocess

    script = Path(__file__).resolve().with_name("spu_workload.py")
    argv = [str(python), str(script), "--cases", ",".join(cases), "--sigmoid-n", str(sigmoid_n)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def _add_spu(results: list[dict[str, Any]], python: Path | None, sigmoid_n: int) -> dict[str, Any] | None:
    """Time SPU on the cases it shares with us (after ours, so the two never share the CPUs)."""
    if python is None:
        return None
    wanted = sorted({SPU_CASES[r["case"]] for r in results if r["case"] in SPU_CASES})
    if not wanted:
        return None
    spu = _spu_figures(python, wanted, sigmoid_n)
    by_case = {r["case"]: r for r in spu.get("results", [])}
    for r in results:
        theirs = by_case.get(SPU_CASES.get(r["case"], ""))
        if theirs is None or theirs["n"] != r["n"]:
            continue
        r["spu_s"] = theirs["seconds"]
        r["ratio_vs_spu"] = round(r["threads"]["seconds"] / max(theirs["seconds"], 1e-9), 3)
        if "train_accuracy" in theirs:
            r["spu_train_accuracy"] = theirs["train_accuracy"]
    return {k: v for k, v in spu.items() if k != "results"}


def _gemm_threads(count: int) -> int:
    """Set torch's intra-op threads (the int8 GEMMs of `ring_matmul`) for this process; return the old count.

    With both computing parties as threads of one process, each party's GEMMs get its share of
    the cores, as separate processes would: torch's thread pool is per process, and two parties
    each asking for every core thrash (two concurrent 1000x2000 @ 2000x1000 ring products
    measured 0.55 s with 2 threads each, 0.27 s with 1 each, on 2 cores).
    """
    try:
        import torch
    except ImportError:
        return count
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    return int(old)


def _op_case(case: str, n: int, processes: bool) -> dict[str, Any]:
    from sharelearn.testing.processes import run_roles_grpc
    from sharelearn.testing.roles import run_roles

    roles: dict[str, Callable[[Link], Any]] = {
        P0: partial(_role, index=0, case=case, n=n),
        P1: partial(_role, index=1, case=case, n=n),
        DEALER: _dealer,
    }
    out: dict[str, Any] = {"case": case, "n": n}
    old = _gemm_threads((os.cpu_count() or 1) // 2)  # two computing parties share this process
    try:
        threads = run_roles(roles, timeout=1800)
    finally:
        _gemm_threads(old)
    plain = _plain_seconds(case, n)
    out["threads"] = _summary(threads[P0], threads[P1])
    out["plain_s"] = round(plain, 4)
    out["ratio"] = round(out["threads"]["seconds"] / max(plain, 1e-9), 1)
    if "train_accuracy" in threads[P0]:
        out["train_accuracy"] = round(threads[P0]["train_accuracy"], 4)
    if processes:
        procs = run_roles_grpc(roles, timeout=1800)
        out["processes"] = _summary(procs[P0], procs[P1])
    return out


def _summary(r0: dict[str, Any], r1: dict[str, Any]) -> dict[str, Any]:
    return {
        "seconds": round(max(r0["seconds"], r1["seconds"]), 3),
        "offline_seconds": round(max(r0["offline_seconds"], r1["offline_seconds"]), 3),
        "bytes": r0["bytes"] + r1["bytes"],
        "rounds": r0["rounds"],
    }


def _ss_lr_epoch() -> dict[str, Any]:
    from sharelearn.algorithms.alignment import PsiParams
    from sharelearn.algorithms.mpc.ss_lr import SSLRParams
    from sharelearn.interfaces.api import run_job
    from sharelearn.testing.steps import load_csv, run_steps

    guest, host = FATE / "default_credit_hetero_guest.csv", FATE / "default_credit_hetero_host.csv"
    out: dict[str, Any] = {"case": "ss_lr_epoch_default_credit", "n": 30000}
    with tempfile.TemporaryDirectory(prefix="bench-mpc-") as tmp:
        parties = {
            "bank": ("guest", load_csv(guest, label="y")),
            "shop": ("host", load_csv(host)),
            "third": ("dealer", None),
        }
        steps = [("psi", PsiParams()), ("ss_lr", SSLRParams(epochs=1))]
        t0 = time.perf_counter()
        run = run_steps(parties, steps, Path(tmp) / "threads", timeout=1800)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0  # psi included (about a second)
        traffic = run.parties["bank"].outputs["ss_lr"]["traffic"]
        out["threads"] = {
            "seconds": round(seconds, 3),
            "bytes": traffic["bytes_sent"] * 2,
            "rounds": traffic["rounds"],
        }
        job = Path(tmp) / "job.yaml"
        job.write_text(
            "job: bench-ss-lr\ntimeout_s: 1800\nparties:\n"
            f"  bank: {{role: guest, data: {{path: {guest}, id: id, label: y}}}}\n"
            f"  shop: {{role: host, data: {{path: {host}, id: id}}}}\n"
            "  third: {role: dealer}\n"
            "steps:\n  - psi: {}\n  - ss_lr: {epochs: 1}\n  - evaluate: {plots: false}\n"
        )
        summary = run_job(job, report_dir=Path(tmp) / "report", audit=False)
    if summary["status"] != "success":
        raise SystemExit(f"ss_lr job failed: {summary['error']}")
    step = summary["steps"]["ss_lr"]
    computing = [v["elapsed_s"] for p, v in step["parties"].items() if p != "third"]
    out["processes"] = {
        # the guest's and host's step time; the dealer's clock also runs while they do `psi`
        "seconds": max(computing),
        "seconds_incl_dealer": step["elapsed_s"],
        "bytes": summary["wire"]["bytes"],
        "rounds": step["parties"]["bank"]["traffic"]["rounds"],
    }
    out["loss_1_epoch"] = step["parties"]["bank"].get("loss")
    out["auc_1_epoch"] = summary["steps"]["evaluate"].get("auc")
    return out


def run(cases: list[str], *, sigmoid_n: int, clip_n: int, gc_n: int, processes: bool) -> list[dict[str, Any]]:
    plan = {
        "matmul": ("matmul", 1000),
        "sigmoid": None,
        "relu": ("relu", gc_n),
        "lt": ("lt", gc_n),
        "relu_narrow": ("relu_narrow", gc_n),
        "lt_narrow": ("lt_narrow", gc_n),
        "lr": ("lr", 10_000),
    }
    results = []
    for name in cases:
        if name == "sigmoid":
            for method, n in (("minimax_unclipped", sigmoid_n), ("taylor", sigmoid_n), ("minimax", clip_n)):
                results.append(_op_case(f"sigmoid_{method}", n, processes))
        elif name == "ss_lr":
            results.append(_ss_lr_epoch())
        else:
            case, n = plan[name]  # type: ignore[misc]
            results.append(_op_case(case, n, processes))
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench mpc", description=__doc__)
    parser.add_argument(
        "--cases",
        default="matmul,sigmoid,relu,lt,relu_narrow,lt_narrow,lr,ss_lr",
        help="comma-separated subset",
    )
    parser.add_argument("--sigmoid-n", type=int, default=1_000_000)
    parser.add_argument(
        "--clip-n", type=int, default=100_000, help="elements for the clipped minimax sigmoid"
    )
    parser.add_argument("--gc-n", type=int, default=100_000, help="garbled ReLUs / comparisons")
    parser.add_argument("--processes", action="store_true", help="also run the operator cases over gRPC")
    parser.add_argument(
        "--spu-python",
        type=Path,
        default=None,
        help="python of a venv with spu 0.9.5 (default: .venv-spu/bin/python when it exists;"
        " make it with benchmarks/envs/spu.sh)",
    )
    parser.add_argument("--no-spu", action="store_true", help="skip SPU even when .venv-spu exists")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    _ = FixedPoint()  # the engine's default encoding (16 fractional bits) is what is measured
    results = run(
        args.cases.split(","),
        sigmoid_n=args.sigmoid_n,
        clip_n=args.clip_n,
        gc_n=args.gc_n,
        processes=args.processes,
    )
    spu_python = args.spu_python or (DEFAULT_SPU_PYTHON if DEFAULT_SPU_PYTHON.exists() else None)
    spu = _add_spu(results, None if args.no_spu else spu_python, args.sigmoid_n)
    if args.json:
        print(json.dumps({"results": results, "spu": spu}))
    else:
        for r in results:
            print(json.dumps(r))
        print(
            json.dumps({"spu": spu if spu is not None else "not run: no .venv-spu (benchmarks/envs/spu.sh)"})
        )
    return 0
