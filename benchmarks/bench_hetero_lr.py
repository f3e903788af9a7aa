"""`sharelearn bench hetero-lr`: vertical LR on default_credit (30,000 rows, 13 + 10 features).

Runs the job through the launcher — guest, host and arbiter as separate processes over gRPC +
mutual TLS, PSI first — once per HE scheme, and reports seconds per epoch, the share of each party's
time spent computing on ciphertexts (`he_s`, from the step's own clock), wire bytes, and the AUC
against scikit-learn on the pooled data. In the same run it times the plaintext twin of the same
training (`hetero_lr.fit_plain`, numpy, same batches and epochs): the ratio is the price of privacy.
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
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams, fit_plain
from sharelearn.interfaces.api import run_job
from sharelearn.testing.steps import load_csv

TARGET_S = {"paillier": 30.0, "ou": 10.0}


def _job(folder: Path, data: Path, scheme: str, args: argparse.Namespace) -> Path:
    job = folder / f"lr-{scheme}.yaml"
    job.write_text(
        f"job: bench-hetero-lr-{scheme}\ntimeout_s: 3600\nparties:\n"
        f"  bank: {{role: guest, data: {{path: {data}/{args.dataset}_hetero_guest.csv, id: id, label: y}}}}\n"
        f"  shop: {{role: host, data: {{path: {data}/{args.dataset}_hetero_host.csv, id: id}}}}\n"
        "  coord: {role: arbiter}\n"
        "steps:\n  - psi: {}\n"
        f"  - hetero_lr: {{epochs: {args.epochs}, batch_size: {args.batch_size}, he_scheme: {scheme},"
        f" key_bits: {args.bits}, tol: 0, seed: 1}}\n"
        "  - evaluate: {plots: false}\n"
    )
    return job


def _plain(data: Path, args: argparse.Namespace) -> dict[str, float]:
    guest = load_csv(data / f"{args.dataset}_hetero_guest.csv", label="y")
    host = load_csv(data / f"{args.dataset}_hetero_host.csv")
    x, y = pool_vertical({"bank": ("guest", guest), "shop": ("host", host)})
    k = guest.x.shape[1]
    params = HeteroLrParams(epochs=args.epochs, batch_size=args.batch_size, tol=0.0)
    started = time.perf_counter()
    ws, _ = fit_plain([x[:, :k], x[:, k:]], y, params, seed=1)
    took = time.perf_counter() - started
    z = x[:, :k] @ ws[0][:-1] + ws[0][-1] + x[:, k:] @ ws[1]
    return {"s_per_epoch": took / args.epochs, "auc": binary_metrics(y, 1 / (1 + np.exp(-z)))["auc"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.data)
    result: dict[str, Any] = {"dataset": args.dataset, "bits": args.bits, "epochs": args.epochs}
    plain = _plain(data, args)
    result["plaintext"] = {k: round(v, 6) for k, v in plain.items()}
    with tempfile.TemporaryDirectory(prefix="sharelearn-bench-lr-") as tmp:
        for scheme in args.schemes.split(","):
            summary = run_job(_job(Path(tmp), data, scheme, args), report_dir=Path(tmp) / scheme, audit=False)
            if summary["status"] != "success":
                raise SystemExit(f"{scheme}: {summary['error']}")
            lr, ev = summary["steps"]["hetero_lr"], summary["steps"]["evaluate"]
            per_epoch = lr["elapsed_s"] / lr["epochs_run"]
            result[scheme] = {
                "s_per_epoch": round(per_epoch, 3),
                "target_s_per_epoch": TARGET_S.get(scheme),
                "vs_plaintext": round(per_epoch / max(plain["s_per_epoch"], 1e-9), 1),
                "he_share": {p: round(o["he_s"] / o["elapsed_s"], 3) for p, o in lr["parties"].items()},
                "wire_mb": round(summary["wire"]["bytes"] / 2**20, 1),
                "auc": ev["auc"],
                "auc_centralized": ev.get("auc_centralized"),
                "auc_delta": ev.get("auc_delta"),
            }
    return result


def main(argv: list[str]) -> int:
    parser = vertical_parser("sharelearn bench hetero-lr", __doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    print_result(run(args), args.json)
    return 0
