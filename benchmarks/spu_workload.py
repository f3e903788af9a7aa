"""SPU's figures for `sharelearn bench mpc`: SecretFlow SPU 0.9.5, SEMI2K simulation, 2 parties, FM64.

Runs ONLY in the separate `.venv-spu` (made by `benchmarks/envs/spu.sh`; SPU pins jax and numpy
versions that conflict with sharelearn's venv), so it imports nothing from sharelearn. `bench_mpc`
starts it as a subprocess and reads the one JSON object it prints:

    .venv-spu/bin/python benchmarks/spu_workload.py [--cases matmul,sigmoid,lr] [--sigmoid-n N]

Cases, on the same inputs as `bench_mpc` (the same numpy generator and seeds):

* matmul: 1000 x 1000 @ 1000 x 1000 (uniform in [-1, 1]).
* sigmoid: `jax.nn.sigmoid` on 1M values uniform in [-10, 10] (SPU's default sigmoid mode).
* lr: logistic regression on 10,000 x 20 (plus an intercept column), 10 full-batch gradient
  steps with learning rate 1, `jax.nn.sigmoid`; reports the training accuracy of the weights.

Each case is one `spu.utils.simulation.sim_jax` call timed end to end (compilation, input sharing,
the protocol and the output reveal), as SPU's users run it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["main", "run_case"]


def _inputs(case: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The inputs `benchmarks/bench_mpc.py` uses for the same case (keep the two in step)."""
    rng = np.random.default_rng(n)
    if case == "matmul":
        return rng.uniform(-1, 1, (n, n)), rng.uniform(-1, 1, (n, n))
    if case == "lr":
        x = rng.normal(size=(n, 20))
        y = (x @ rng.normal(size=20) + 0.5 * rng.normal(size=n) > 0).astype(np.float64)
        return x, y
    return rng.uniform(-10, 10, n), None


def run_case(case: str, n: int) -> dict[str, Any]:
    """Time one case in SPU's SEMI2K simulation (2 parties, 64-bit ring)."""
    import jax
    import jax.numpy as jnp
    import spu
    import spu.utils.simulation as spsim

    sim = spsim.Simulator.simple(2, spu.ProtocolKind.SEMI2K, spu.FieldType.FM64)
    x, y = _inputs(case, n)
    out: dict[str, Any] = {"case": case, "n": n}
    fn: Callable[..., Any]
    if case == "matmul":
        fn, args = jnp.matmul, (x, y)
    elif case == "sigmoid":
        fn, args = jax.nn.sigmoid, (x,)
    elif case == "lr":
        xx = np.hstack([x, np.ones((n, 1))])

        def fn(a: Any, b: Any) -> Any:
            w = jnp.zeros(a.shape[1])
            for _ in range(10):
                w = w - 1.0 / a.shape[0] * a.T @ (jax.nn.sigmoid(a @ w) - b)
            return w

        args = (xx, y)
    else:
        raise SystemExit(f"spu_workload: unknown case {case!r} (matmul, sigmoid, lr)")
    t0 = time.perf_counter()
    result = np.asarray(spsim.sim_jax(sim, fn)(*args))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if case == "lr":
        assert y is not None
        out["train_accuracy"] = round(float(np.mean(((xx @ result) > 0) == (y > 0.5))), 4)
    elif case == "sigmoid":
        out["max_abs_error"] = round(float(np.max(np.abs(result - 1 / (1 + np.exp(-x))))), 6)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="matmul,sigmoid,lr")
    parser.add_argument("--sigmoid-n", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    import spu

    sizes = {"matmul": 1000, "sigmoid": args.sigmoid_n, "lr": 10_000}
    results = [run_case(c, sizes[c]) for c in args.cases.split(",") if c]
    print(
        json.dumps(
            {
                "spu_version": spu.__version__,
                "protocol": "SEMI2K",
                "field": "FM64",
                "parties": 2,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
