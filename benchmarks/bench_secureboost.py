"""`sharelearn bench secureboost`: vertical SecureBoost on default_credit (30,000 rows, 13 + 10 features).

Runs the job through the launcher (guest and host as separate processes over gRPC + mutual TLS,
PSI first), once per HE scheme, with FATE's benchmark configuration (30 trees, depth 3, 32 bins)
and 2048-bit keys by default. Reports seconds per tree and where the time goes:

* encrypt: the guest encrypting the packed (g, h) of every row, once per tree;
* histogram: the host's encrypted bin sums, subtraction, compression and re-randomisation;
* decrypt: the guest decrypting the compressed histograms;
* split: the guest's plaintext gain search;
* network: the guest's waiting time for histograms less the host's histogram time (transfer,
  (de)serialisation and scheduling).

In the same run it trains plaintext XGBoost (hist, same parameters, pooled data) and prints the
ratio. Targets on a 2-core machine: <= 12 s per tree with Paillier, <= 5 s with OU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_result, vertical_parser
from sharelearn.algorithms.metrics import binary_metrics, pool_vertical
from sharelearn.interfaces.api import run_job
from sharelearn.testing.steps import load_csv

TARGET_S = {"paillier": 12.0, "ou": 5.0}


def _job(folder: Path, data: Path, scheme: str, args: argparse.Namespace) -> Path:
    job = folder / f"sb-{scheme}.yaml"
    job.write_text(
        f"job: bench-secureboost-{scheme}\ntimeout_s: 3600\nparties:\n"
        f"  bank: {{role: guest, data: {{path: {data}/{args.dataset}_hetero_guest.csv, id: id, label: y}}}}\n"
        f"  shop: {{role: host, data: {{path: {data}/{args.dataset}_hetero_host.csv, id: id}}}}\n"
        "steps:\n  - psi: {}\n"
        f"  - secureboost: {{num_trees: {args.trees}, max_depth: {args.depth}, max_bins: {args.bins},"
        f" learning_rate: 0.3, validation_fraction: 0, early_stopping_rounds: 0,"
        f" he_scheme: {scheme}, key_bits: {args.bits}}}\n"
        "  - evaluate: {plots: false}\n"
    )
    return job


def _xgboost(data: Path, args: argparse.Namespace) -> dict[str, float]:
    import xgboost as xgb

    guest = load_csv(data / f"{args.dataset}_hetero_guest.csv", label="y")
    host = load_csv(data / f"{args.dataset}_hetero_host.csv")
    x, y = pool_vertical({"bank": ("guest", guest), "shop": ("host", host)})
    params = {
        "tree_method": "hist",
        "objective": "binary:logistic",
        "max_depth": args.depth,
        "max_bin": args.bins,
        "eta": 0.3,
        "base_score": float(np.mean(y)),
        "nthread": 2,
    }
    started = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=args.trees)
    took = time.perf_counter() - started
    auc = binary_metrics(y, booster.predict(xgb.DMatrix(x)))["auc"]
    return {"s_per_tree": took / args.trees, "auc": auc}


def _row(summary: dict[str, Any], plain: dict[str, float], scheme: str) -> dict[str, Any]:
    parties = summary["steps"]["secureboost"]["parties"]
    guest, host = parties["bank"], parties["shop"]
    trees = max(1, guest["trees"])
    timing = {
        "encrypt": guest["timing"]["encrypt_s"],
        "histogram": host["timing"]["histogram_s"],
        "decrypt": guest["timing"]["decrypt_s"],
        "split": guest["timing"]["split_s"],
        "network": max(0.0, guest["timing"]["wait_s"] - host["timing"]["histogram_s"]),
    }
    ev = summary["steps"]["evaluate"]
    return {
        "s_per_tree": guest["seconds_per_tree"],
        "target_s_per_tree": TARGET_S.get(scheme),
        "vs_xgboost": round(guest["seconds_per_tree"] / max(plain["s_per_tree"], 1e-9), 1),
        "per_tree_s": {k: round(v / trees, 3) for k, v in timing.items()},
        "wire_mb": round(summary["wire"]["bytes"] / 2**20, 1),
        "auc": ev["auc"],
        "auc_centralized": ev.get("auc_centralized"),
        "auc_delta": ev.get("auc_delta"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.data)
    result: dict[str, Any] = {
        "dataset": args.dataset,
        "bits": args.bits,
        "trees": args.trees,
        "depth": args.depth,
    }
    plain = _xgboost(data, args)
    result["xgboost"] = {k: round(v, 6) for k, v in plain.items()}
    with tempfile.TemporaryDirectory(prefix="sharelearn-bench-sb-") as tmp:
        for scheme in args.schemes.split(","):
            summary = run_job(_job(Path(tmp), data, scheme, args), report_dir=Path(tmp) / scheme, audit=False)
            if summary["status"] != "success":
                raise SystemExit(f"{scheme}: {summary['error']}")
            result[scheme] = _row(summary, plain, scheme)
    return result


def main(argv: list[str]) -> int:
    parser = vertical_parser("sharelearn bench secureboost", __doc__)
    parser.add_argument("--trees", type=int, default=30)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--bins", type=int, default=32)
    args = parser.parse_args(argv)
    print_result(run(args), args.json)
    return 0
