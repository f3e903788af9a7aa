"""What the vertical benchmarks share: the dataset/scheme arguments and how a result is printed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["FATE", "print_result", "vertical_parser"]

FATE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fate"


def vertical_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A parser with --dataset, --data, --bits, --schemes and --json (a hetero guest/host pair)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--dataset", default="default_credit", help="FATE dataset family (hetero split)")
    parser.add_argument("--data", default=str(FATE), help="folder with <dataset>_hetero_{guest,host}.csv")
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--schemes", default="paillier,ou")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """One JSON object, or one `key: value` line per entry."""
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>12}: {value}")
