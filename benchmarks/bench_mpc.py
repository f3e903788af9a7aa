"""`sharelearn bench mpc [--json]`: the ss engine's operators and ss_lr, in threads and in processes.

Cases (two computing parties and a dealer; seconds, bytes sent by both parties, rounds of party 0):

* matmul: shared 1000 x 1000 @ 1000 x 1000 (one matrix Beaver triple, dealt before the clock
  starts: `offline_seconds`).
* sigmoid: 1M sigmoids with `minimax_unclipped` and `taylor` (pure Beaver arithmetic), and
  `--clip-n` (default 100k) with `minimax` (clipped by two garbled ReLUs, bounded on all reals).
* relu / lt: 100k garbled ReLUs and comparisons, exact on the whole ring (64-bit sign circuit);
  relu_narrow / lt_narrow: the same with a 41-bit sign circuit (exact for |x| < 2^24).
* lr: logistic regression on 10,000 x 20 shared rows, 10 full-batch epochs (`minimax_unclipped`
  sigmoid), with the training accuracy of the revealed model.
* ss_lr: one `ss_lr` epoch on default_credit (30,000 rows) in threads (`run_steps`) and across
  processes over gRPC + mTLS (the launcher, `run_job`).

The baseline measured in the same run is the plaintext engine (`PlainOps`, numpy float64) on the
same operation: `ratio` = ss / plain. SPU's SEMI2K simulation is timed on the same operations only
when `spu` is importable (the `bench` extra); otherwise its figures are reported as missing.
Operator cases run in threads by default; `--processes` also runs them over gRPC + mTLS.
"""

from __future__ import annotations

import argparse
import json
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
from sharelearn.operators.ss_arith import SSOps
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
    offline = time.perf_counter()
    if case == "matmul":  # the dealer's matrix triple is offline work: fetch it before timing
        engine.triples.prefetch([matmul_spec(n, n, n)])  # type: ignore[attr-defined]
    offline = time.perf_counter() - offline
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


def _spu_seconds(case: str, n: int) -> float | str | None:
    """SPU SEMI2K (2 parties, simulation) on the same operation, if `spu` is installed."""
    try:
        import spu
        import spu.utils.simulation as spsim
    except ImportError:
        return None
    import jax.numpy as jnp

    sim = spsim.Simulator.simple(2, spu.spu_pb2.ProtocolKind.SEMI2K, spu.spu_pb2.FieldType.FM64)
    x, y = _inputs(case, n)
    fns: dict[str, Callable[..., Any]] = {
        "matmul": lambda a, b: jnp.matmul(a, b),
        "relu": lambda a: jnp.maximum(a, 0),
        "lt": lambda a, b: a < b,
    }
    if case not in fns and not case.startswith("sigmoid"):
        return None
    fn = fns.get(case, lambda a: 1 / (1 + jnp.exp(-a)))
    args = [x] if y is None or case.startswith("sigmoid") else [x, y]
    t0 = time.perf_counter()
    try:  # an SPU whose API differs from 0.9.5 must not cost us our own figures
        spsim.sim_jax(sim, fn)(*args)
    except (AttributeError, TypeError, RuntimeError) as exc:
        return f"spu failed: {type(exc).__name__}: {exc}"
    return time.perf_counter() - t0


def _op_case(case: str, n: int, processes: bool) -> dict[str, Any]:
    from sharelearn.testing.processes import run_roles_grpc
    from sharelearn.testing.roles import run_roles

    roles: dict[str, Callable[[Link], Any]] = {
        P0: partial(_role, index=0, case=case, n=n),
        P1: partial(_role, index=1, case=case, n=n),
        DEALER: _dealer,
    }
    out: dict[str, Any] = {"case": case, "n": n}
    threads = run_roles(roles, timeout=1800)
    plain = _plain_seconds(case, n)
    out["threads"] = _summary(threads[P0], threads[P1])
    out["plain_s"] = round(plain, 4)
    out["ratio"] = round(out["threads"]["seconds"] / max(plain, 1e-9), 1)
    if "train_accuracy" in threads[P0]:
        out["train_accuracy"] = round(threads[P0]["train_accuracy"], 4)
    if processes:
        procs = run_roles_grpc(roles, timeout=1800)
        out["processes"] = _summary(procs[P0], procs[P1])
    out["spu_s"] = _spu_seconds(case, n)
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
    out["processes"] = {"seconds": summary["steps"]["ss_lr"]["elapsed_s"], "bytes": summary["wire"]["bytes"]}
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
    if args.json:
        print(json.dumps({"results": results}))
    else:
        for r in results:
            print(json.dumps(r))
    return 0
