"""`sharelearn bench codec`: what the decoded-size walk costs the codec, per message kind.

For each message it times, in the same run, `encode`, the decode path without the walk
(`codec._unpack`, what `decode` did before the walk existed), the full `decode` (walk + unpack)
and the walk alone, and prints decode / unpack. The kinds: a 16 MB float64 array, a typical
ciphertext message (an EncArray wire dict of 1,024 2048-bit Paillier ciphertexts), the arbiter's
reply of 4,096 big integers, and object-heavy lists (100k floats, 20k ids, 10k pairs) that are
large enough to be walked. Finally the attack: 16 MiB of empty lists, refused by the walk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sharelearn.core import codec
from sharelearn.core.errors import DecodeError
from sharelearn.core.msgsize import MAX_COST_PER_BYTE, check_decoded_size


def _best_ms(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def _messages() -> dict[str, Any]:
    return {
        "array_16MB": np.random.default_rng(0).standard_normal(2 << 20),
        "ciphertexts_1024x2048bit": {
            "scheme": "paillier",
            "key_id": "0f" * 8,
            "shape": [1024],
            "frac_bits": 16,
            "pack": None,
            "weight": 1,
            "width": 512,
            "data": os.urandom(512 * 1024),
        },
        "bigints_4096": [int.from_bytes(os.urandom(32), "big") for _ in range(4096)],
        "floats_100k": np.random.default_rng(1).standard_normal(100_000).tolist(),
        "ids_20k": [f"customer-{i:07d}" for i in range(20_000)],
        "pairs_10k": [[i, 2 * i] for i in range(1000, 11_000)],
    }


def bench(repeat: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    limits = codec.DEFAULT_LIMITS
    for name, value in _messages().items():
        data = codec.encode(value)
        walked = len(data) * MAX_COST_PER_BYTE > codec.decoded_budget(len(data))
        enc = _best_ms(lambda v=value: codec.encode(v), repeat)  # type: ignore[misc]
        unpack = _best_ms(lambda d=data: codec._unpack(d, "p", "t", limits), repeat)  # type: ignore[misc]
        full = _best_ms(lambda d=data: codec.decode(d), repeat)  # type: ignore[misc]
        walk = _best_ms(lambda d=data: check_decoded_size(d, 1 << 40), repeat)  # type: ignore[misc]
        rows[name] = {
            "bytes": len(data),
            "walked": walked,
            "encode_ms": round(enc, 3),
            "unpack_ms": round(unpack, 3),
            "decode_ms": round(full, 3),
            "walk_ms": round(walk, 3),
            "decode/unpack": round(full / unpack, 3),
        }
    attack = b"\xdd" + (16 << 20).to_bytes(4, "big") + b"\x90" * (16 << 20)
    t = time.perf_counter()
    try:
        codec.decode(attack, peer="shop", tag="flood")
        refused = False
    except DecodeError:
        refused = True
    rows["attack_16MiB_empty_lists"] = {"refused": refused, "ms": round((time.perf_counter() - t) * 1e3, 1)}
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench codec", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = bench(args.repeat)
    if args.json:
        print(json.dumps(rows))
        return 0
    for name, row in rows.items():
        print(f"{name:>26}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
