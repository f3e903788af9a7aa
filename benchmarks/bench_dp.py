"""`sharelearn bench dp`: the cost of floating-point-safe DP noise per FedAvg round.

Times, in the same run, the exact discrete Gaussian (`crypto.discrete_gaussian`, CKS 2020) for a
model of `--params` coordinates on the grid `add_gaussian_noise` uses, the whole noisy sum
(rounding + noise), and the baseline it replaced: numpy's floating-point `normal` (PCG64, not safe
against Mironov's attack). When OpenDP is importable (not a dependency), its `make_gaussian` on the
same vector is timed too. Prints seconds per round and the ratios to numpy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sharelearn.crypto.discrete_gaussian import discrete_gaussian
from sharelearn.crypto.dp import add_gaussian_noise, noise_grid


def _best_s(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _opendp_s(n: int, std: float, repeat: int) -> float | None:
    try:
        import opendp.prelude as dp  # type: ignore[import-not-found]
    except ImportError:
        return None
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=n), dp.l2_distance(T=float)
    meas = dp.m.make_gaussian(*space, scale=std)
    zeros = [0.0] * n
    return _best_s(lambda: meas(zeros), repeat)


def bench(params: int, z: float, clip: float, repeat: int) -> dict[str, Any]:
    grid = noise_grid(params, z, clip)
    total = np.random.default_rng(0).standard_normal(params)
    gen = np.random.default_rng(1)
    numpy_s = _best_s(lambda: gen.normal(0.0, z * clip, size=params), repeat)
    sampler_s = _best_s(lambda: discrete_gaussian(params, grid.t, grid.m), repeat)
    round_s = _best_s(lambda: add_gaussian_noise(total, z, clip), repeat)
    out: dict[str, Any] = {
        "params": params,
        "noise_multiplier": z,
        "clip_norm": clip,
        "grid_resolution": grid.resolution,
        "grid_sigma_steps": round((grid.t * grid.m) ** 0.5, 1),
        "numpy_normal_s": round(numpy_s, 4),
        "discrete_gaussian_s": round(sampler_s, 4),
        "noisy_sum_s": round(round_s, 4),
        "discrete/numpy": round(sampler_s / numpy_s, 1),
    }
    opendp = _opendp_s(params, z * clip, max(1, repeat // 3))
    if opendp is not None:
        out["opendp_s"] = round(opendp, 3)
        out["opendp/discrete"] = round(opendp / sampler_s, 1)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench dp", description=__doc__)
    parser.add_argument("--params", type=int, default=100_000, help="model coordinates per round")
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = bench(args.params, args.noise_multiplier, args.clip_norm, args.repeat)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
