"""`python -m benchmarks.bench_paillier --bits 2048 --n 512`: per-op cost of the HE engines.

For Paillier and Okamoto–Uchiyama it times the batch API on one core (no executor) and on all cores
(a `ThreadExecutor`, the jobs' default compute, or `--executor processes`):
encrypt, decrypt, ciphertext + ciphertext, ciphertext x 63-bit scalar. Baselines measured in the same
run: one bare gmpy2 multiply-mod of the ciphertext size (what an addition must cost at least), and
python-paillier (`phe`, the optional `bench` extra) when it is importable.

The hardware probe (`core_scaling`) runs a bare kernel loop alone and then in one process per core
at once: the IFMA Montgomery kernel (no Python between calls) and gmpy2 multiplications. Its
throughput ratios are the ceiling for the "all cores" column of the ops each engine bounds.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

import gmpy2
import numpy as np

from sharelearn.core.executor import Executor
from sharelearn.crypto import he
from sharelearn.crypto.kernels import mbx, mbxmont
from sharelearn.runtime.executors import ComputeSpec, make_executor

_SCALAR = (1 << 63) - 25  # a 63-bit multiplier


def _time(fn: Callable[[], Any], count: int, repeat: int = 3) -> float:
    """Best-of-`repeat` microseconds per item."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / count * 1e6


def _bare_mulmod(mod: Any, count: int) -> float:
    xs = [gmpy2.mpz(secrets.randbits(int(mod.bit_length()))) % mod for _ in range(count)]
    ys = xs[1:] + xs[:1]
    return _time(lambda: [a * b % mod for a, b in zip(xs, ys, strict=True)], count)


def bench_scheme(scheme: str, bits: int, count: int, cores: int, executor: Executor) -> dict[str, Any]:
    pk, sk = he.keygen(scheme, bits)
    x = np.array([secrets.randbits(40) - (1 << 39) for _ in range(count)], dtype=np.int64)
    t = time.perf_counter()
    he.encrypt(pk, x[:8])  # builds the fixed-base tables once
    table_s = time.perf_counter() - t
    c = he.encrypt(pk, x)
    he.encrypt(pk, x, executor=executor)  # starts the executor's workers and their tables
    out: dict[str, Any] = {"scheme": scheme, "bits": bits, "n": count, "table_build_s": round(table_s, 3)}
    for label, ex in (("1core", None), (f"{cores}core", executor)):
        ops: dict[str, Callable[[], Any]] = {
            "encrypt": functools.partial(he.encrypt, pk, x, executor=ex),
            "decrypt": functools.partial(he.decrypt, sk, c, executor=ex),
            "add": lambda: c + c,
            "mul_scalar63": functools.partial(c.mul, _SCALAR, executor=ex),
        }
        out[label] = {name: round(_time(fn, count), 2) for name, fn in ops.items()}
    out["bare_mulmod_us"] = round(_bare_mulmod(pk.cipher_modulus, count), 2)
    np.testing.assert_array_equal(he.decrypt(sk, c + c), 2 * x)
    return out


def bench_phe(bits: int, count: int) -> dict[str, Any] | None:
    try:
        import phe
    except ImportError:
        return None
    pk, sk = phe.generate_paillier_keypair(n_length=bits)
    xs = [secrets.randbits(40) for _ in range(count)]
    cs = [pk.encrypt(v) for v in xs]
    return {
        "encrypt": round(_time(lambda: [pk.encrypt(v) for v in xs], count, 1), 2),
        "decrypt": round(_time(lambda: [sk.decrypt(v) for v in cs], count, 1), 2),
        "add": round(_time(lambda: [a + b for a, b in zip(cs, cs, strict=True)], count, 1), 2),
        "mul_scalar63": round(_time(lambda: [a * _SCALAR for a in cs], count, 1), 2),
    }


def _print(results: dict[str, Any]) -> None:
    cores = results["cores"]
    print(
        f"bits={results['bits']} n={results['n']} mbx={results['mbx']} cores={cores} "
        f"executor={results['executor']} (us/op; ops/s)"
    )
    for r in results["schemes"]:
        print(
            f"{r['scheme']}: table build {r['table_build_s']} s, bare gmpy2 mulmod {r['bare_mulmod_us']} us"
        )
        for op in r["1core"]:
            one, many = r["1core"][op], r[f"{cores}core"][op]
            print(
                f"  {op:13s} 1 core {one:9.2f} us {1e6 / one:10.0f}/s | {cores} cores {many:9.2f} us "
                f"{1e6 / many:10.0f}/s  x{one / many:.2f}"
            )
    if results.get("phe"):
        p = results["phe"]
        print("phe (python-paillier, 1 core): " + ", ".join(f"{k} {v} us" for k, v in p.items()))
        for r in results["schemes"]:
            mine = r["1core"]
            print(f"  {r['scheme']} speed-up vs phe: " + ", ".join(f"{k} x{p[k] / mine[k]:.1f}" for k in p))
    else:
        print("phe not installed (pip install 'sharelearn[bench]') - no python-paillier baseline")
    if results.get("core_scaling"):
        print(
            f"hardware probe, {cores} processes of a bare loop at once vs one alone: "
            + ", ".join(f"{k} x{v}" for k, v in results["core_scaling"].items())
        )


def _kernel_loop(engine: str, seconds: float) -> float:
    """Operations per second of one bare loop (2048-bit multiplications) over `seconds`."""
    mod = (gmpy2.mpz(1) << 2047) + 12345
    step: Callable[[], int]
    if engine == "ifma":
        found = mbxmont.kernel(2048)
        if found is None:
            return 0.0
        ctx = mbxmont._Modulus(mod, *found)
        acc = np.ones((64, found[1], mbxmont.LANES), dtype=np.uint64)

        def step() -> int:
            ctx.multiply(acc, acc, 0, 64)
            return 64 * mbxmont.LANES

    else:
        xs = [gmpy2.mpz(secrets.randbits(2047)) for _ in range(512)]

        def step() -> int:
            for x in xs:
                _ = x * x % mod
            return len(xs)

    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += step()
    return done / elapsed


def core_scaling(cores: int, seconds: float = 1.5) -> dict[str, float]:
    """Throughput of `cores` processes running the same bare loop at once, over one process alone."""
    out = {}
    ctx = multiprocessing.get_context("spawn")
    for engine in ("ifma", "gmpy2"):
        alone = _kernel_loop(engine, seconds)
        if alone == 0.0:
            continue
        with ctx.Pool(cores) as pool:
            together = sum(pool.starmap(_kernel_loop, [(engine, seconds)] * cores))
        out[engine] = round(together / alone, 2)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_paillier", description=__doc__)
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--n", type=int, default=512, help="batch size")
    parser.add_argument("--schemes", default="paillier,ou")
    parser.add_argument("--portable", action="store_true", help="disable the mbx kernels")
    parser.add_argument("--executor", choices=("threads", "processes"), default="threads")
    parser.add_argument("--probe-seconds", type=float, default=1.5, help="per loop of the hardware probe")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    mbx.force_portable(args.portable)
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"bits": args.bits, "n": args.n, "cores": cores, "mbx": mbx.is_available()}
    results["executor"] = args.executor
    with make_executor(ComputeSpec(backend=args.executor)) as executor:
        results["schemes"] = [
            bench_scheme(s, args.bits, args.n, cores, executor) for s in args.schemes.split(",")
        ]
    results["phe"] = bench_phe(args.bits, min(args.n, 64))
    if cores > 1:
        results["core_scaling"] = core_scaling(cores, args.probe_seconds)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
