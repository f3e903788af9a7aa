"""`sharelearn bench psi --size N`: two parties as processes, N ids each, half of them shared.

Reports the PSI step's wall time, ids/s, and the bound measured in the same run: the time of the
hash and X25519 operations alone (4 per id pair, spread over the cores, same X25519 backend). The
ratio psi / bound shows what the protocol, transport and processes cost on top of the crypto.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.crypto import x25519
from sharelearn.interfaces.api import run_job
from sharelearn.runtime.executors import ThreadExecutor


def _write_parties(folder: Path, n: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**12, size=n + n // 2, replace=False) + 10**12
    common, only_a, only_b = ids[: n // 2], ids[n // 2 : n], ids[n:]
    only_b = np.concatenate([only_b, rng.choice(10**11, size=n - n // 2 - only_b.size, replace=False)])
    for name, own in (("a", np.concatenate([common, only_a])), ("b", np.concatenate([common, only_b]))):
        rng.shuffle(own)
        (folder / f"{name}.csv").write_text("id\n" + "\n".join(map(str, own.tolist())) + "\n")
    return int(common.size)


def _job(folder: Path, batch: int) -> Path:
    job = folder / "psi.yaml"
    job.write_text(
        "job: bench-psi\ntimeout_s: 1200\nparties:\n"
        "  a: {role: guest, data: {path: a.csv, id: id}}\n"
        "  b: {role: host, data: {path: b.csv, id: id}}\n"
        f"steps:\n  - psi: {{batch_size: {batch}}}\n"
    )
    return job


def measure_bound(n: int, cores: int) -> dict[str, float]:
    """Time 2n hashes (two parties hash at once: / cores) and 4n X25519 over `cores` threads."""
    ids = [str(10**12 + i).encode() for i in range(2 * n)]
    t = time.perf_counter()
    points = x25519.hash_to_point(ids)
    hash_s = time.perf_counter() - t
    scalar = x25519.random_scalar()
    with ThreadExecutor(cores) as executor:
        t = time.perf_counter()
        x25519.scalarmult(scalar, points, executor=executor)
        x25519.scalarmult(scalar, points, executor=executor)
        curve_s = time.perf_counter() - t
    return {"hash_s": hash_s, "x25519_s": curve_s, "bound_s": hash_s / cores + curve_s}


def run(size: int, batch: int) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-psi-") as tmp:
        folder = Path(tmp)
        expected = _write_parties(folder, size, seed=size)
        summary = run_job(_job(folder, batch), report_dir=folder / "report", audit=False)
    if summary["status"] != "success":
        raise SystemExit(f"PSI failed: {summary['error']}")
    psi = summary["steps"]["psi"]
    bound = measure_bound(size, cores)
    return {
        "size": size,
        "cores": cores,
        "backend": x25519.backend_name(),
        "intersection_size": psi["intersection_size"],
        "intersection_exact": psi["intersection_size"] == expected,
        "psi_s": psi["elapsed_s"],
        "job_s": summary["elapsed_s"],
        "ids_per_s": round(2 * size / psi["elapsed_s"]),
        **{k: round(v, 3) for k, v in bound.items()},
        "ratio_to_bound": round(psi["elapsed_s"] / bound["bound_s"], 3),
        "max_rss_mb": {p: v["max_rss_mb"] for p, v in summary["parties"].items()},
        "wire_bytes": summary["wire"]["bytes"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharelearn bench psi", description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000, help="ids per party (half shared)")
    parser.add_argument("--batch", type=int, default=65536, help="ids per message")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args.size, args.batch)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0 if result["intersection_exact"] else 1
