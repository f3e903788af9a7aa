"""The host role of SecureBoost: encrypted histograms of its features, private split lookup table.

See `secureboost` for the protocol and what each party learns.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.context import StepContext
from sharelearn.algorithms.modelstore import save_model
from sharelearn.algorithms.package import publish_model
from sharelearn.algorithms.vertical import tree_kernels as tk
from sharelearn.algorithms.vertical.secureboost_model import SecureBoostHostModel
from sharelearn.algorithms.vertical.secureboost_params import (
    CHECKPOINT_FILE,
    CHECKPOINT_STEP,
    F64,
    I64,
    SecureBoostParams,
    Timing,
    load_checkpoint,
    unpack_mask,
)
from sharelearn.core import codec
from sharelearn.core.errors import DecodeError, ProtocolError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.types import Wire
from sharelearn.crypto import he
from sharelearn.crypto.he import EncArray
from sharelearn.operators import he_histogram as hh

__all__ = ["run_host"]


@dataclass
class _HostState:
    tree: list[int]
    feature: list[int]
    threshold: list[float]
    key: bytes


def _host_checkpoint(path: Path, fingerprint: str, trees: int, st: _HostState) -> None:
    arrays: dict[str, np.ndarray] = {
        "tree": np.asarray(st.tree, dtype=np.int64),
        "feature": np.asarray(st.feature, dtype=np.int64),
        "threshold": np.asarray(st.threshold, dtype=np.float64),
        "key": np.frombuffer(st.key, dtype=np.uint8).copy(),
    }
    save_model(path, CHECKPOINT_STEP, {"fingerprint": fingerprint, "trees": trees}, arrays)


def _host_resume(path: Path, fingerprint: str) -> tuple[int, _HostState] | None:
    found = load_checkpoint(path, fingerprint)
    if found is None:
        return None
    meta, arrays = found
    st = _HostState(
        arrays["tree"].tolist(),
        arrays["feature"].tolist(),
        arrays["threshold"].tolist(),
        arrays["key"].tobytes(),
    )
    return int(meta["trees"]), st


def _permutation(key: bytes, tree: int, node: int, features: int) -> I64:
    """A secret per-node shuffle of the host's features (keyed, so a resumed run shuffles alike)."""
    digest = hmac.new(key, f"{tree}/{node}".encode(), hashlib.sha256).digest()
    return (
        np.random.default_rng(np.frombuffer(digest, dtype=np.uint64)).permutation(features).astype(np.int64)
    )


@dataclass
class _HostRun:
    link: Link
    guest: str
    params: SecureBoostParams
    pk: he.HEPublicKey
    spec: hh.GHPacking
    bins: npt.NDArray[np.int32]
    edges: list[F64]
    state: _HostState
    timing: Timing
    executor: Executor | None = None  # the party's executor for HE batches (None: this thread)


def _host_histograms(
    run: _HostRun,
    ct: Any,
    level: list[int],
    rows_of: dict[int, I64],
    parent_of: dict[int, int],
    cache: dict[int, Any],
    t: int,
) -> Any:
    """Per node of `level`: encrypted (F * B) bin sums, the smaller sibling built, the other subtracted."""
    mod, b = run.pk.cipher_modulus, run.params.max_bins
    done: dict[int, Any] = {}
    for nd in level:
        if nd in done:
            continue
        parent = parent_of.get(nd)
        sibs = [s for s in level if s != nd and parent is not None and parent_of.get(s) == parent]
        if parent in cache and sibs:
            small, big = sorted([nd, sibs[0]], key=lambda v: (len(rows_of[v]), v))
            done[small] = hh.bin_products(ct, run.bins, rows_of[small], b, mod)
            done[big] = hh.subtract(cache[parent], done[small], mod)
        else:
            done[nd] = hh.bin_products(ct, run.bins, rows_of[nd], b, mod)
    cache.clear()
    cache.update(done)
    features = run.bins.shape[1]
    out = np.empty((len(level), features * b), dtype=object)
    for k, nd in enumerate(level):
        perm = _permutation(run.state.key, t, nd, features)
        out[k] = done[nd].reshape(features, b)[perm].ravel()
    return out


def _host_pick(run: _HostRun, item: Any, level: list[int], t: int) -> tuple[int, int, int]:
    """Map the guest's (node, tied (position, bin) candidates) to a real (feature, bin).

    Exact ties are broken by the real feature order, then bin: what a pooled booster would pick.
    """
    bad = DecodeError(f"split from {run.guest!r}: malformed entry", peer=run.guest, tag="split")
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], list)):
        raise bad
    nd: Any = item[0]
    cands: list[Any] = item[1]
    if not isinstance(nd, int) or nd not in level or not 1 <= len(cands) <= tk.MAX_TIES:
        raise bad
    perm = _permutation(run.state.key, t, nd, run.bins.shape[1])
    picks = []
    for cand in cands:
        if not (isinstance(cand, list) and len(cand) == 2 and all(type(v) is int for v in cand)):
            raise bad
        pos: int = cand[0]
        b: int = cand[1]
        if not 0 <= pos < len(perm) or not 0 <= b < len(run.edges[int(perm[pos])]) - 1:
            raise DecodeError(
                f"split from {run.guest!r}: feature position {pos} / bin {b} out of range",
                peer=run.guest,
                tag="split",
            )
        picks.append((int(perm[pos]), b))
    j, best_bin = min(picks)
    return nd, j, best_bin


def _host_level(
    run: _HostRun,
    link: Link,
    ct: Any,
    level: list[int],
    rows_of: dict[int, I64],
    parent_of: dict[int, int],
    cache: dict[int, Any],
    t: int,
) -> None:
    started = time.perf_counter()
    hists = _host_histograms(run, ct, level, rows_of, parent_of, cache, t)
    enc = hh.compress(hists, run.spec, run.pk, executor=run.executor)
    run.timing.histogram_s += time.perf_counter() - started
    link.send(run.guest, "hist", {"features": run.bins.shape[1], "enc": enc.to_wire()})
    wins = codec.expect_type(link.recv(run.guest, "split"), list, peer=run.guest, tag="split")
    answers: list[Wire] = []
    for item in wins:
        nd, j, b = _host_pick(run, item, level, t)
        run.state.tree.append(t)
        run.state.feature.append(j)
        run.state.threshold.append(float(run.edges[j][b]))
        mask = run.bins[rows_of[nd], j] <= b
        answers.append([len(run.state.feature) - 1, np.packbits(mask).tobytes()])
    if wins:
        link.send(run.guest, "partition", answers)
    children = codec.expect_type(link.recv(run.guest, "children"), list, peer=run.guest, tag="children")
    for item in children:
        if not (isinstance(item, list) and len(item) == 4 and item[0] in level and item[0] in rows_of):
            raise DecodeError(f"children from {run.guest!r}: malformed entry", peer=run.guest, tag="children")
        nd, left, right = (codec.expect_type(v, int, peer=run.guest, tag="children") for v in item[:3])
        mask = unpack_mask(item[3], len(rows_of[nd]), peer=run.guest, tag="children")
        rows_of[left], rows_of[right] = rows_of[nd][mask], rows_of[nd][~mask]
        parent_of[left] = parent_of[right] = nd


def _host_tree(run: _HostRun, link: Link, ct: Any, n: int, t: int) -> None:
    rows_of: dict[int, I64] = {0: np.arange(n, dtype=np.int64)}
    parent_of: dict[int, int] = {}
    cache: dict[int, Any] = {}
    for depth in range(run.params.max_depth):
        step = link.scope("depth", depth)
        level = codec.expect_type(step.recv(run.guest, "expand"), list, peer=run.guest, tag="expand")
        if not level:
            return
        if not all(isinstance(v, int) and v in rows_of for v in level):
            raise DecodeError(f"expand from {run.guest!r}: unknown node ids", peer=run.guest, tag="expand")
        _host_level(run, step, ct, level, rows_of, parent_of, cache, t)


def run_host(ctx: StepContext, params: SecureBoostParams, guest: str) -> dict[str, Any]:
    assert ctx.data is not None
    n = len(ctx.data)
    link = ctx.link
    setup = codec.expect_type(link.recv(guest, "setup"), dict, peer=guest, tag="setup")
    fingerprint = params.fingerprint(ctx.data.ids)
    if setup.get("rows") != n or setup.get("fingerprint") != fingerprint:
        raise ProtocolError(
            f"secureboost setup from {guest!r}: rows or parameters differ from {ctx.party!r}'s ({n} rows)",
            peer=guest,
            tag="setup",
        )
    pk = he.public_key_from_wire(setup.get("pk"))
    packing = setup.get("packing")
    if not (isinstance(packing, list) and len(packing) == 3 and all(isinstance(v, int) for v in packing)):
        raise DecodeError(f"setup from {guest!r}: malformed packing", peer=guest, tag="setup")
    spec = hh.GHPacking(*packing)
    if spec != hh.make_packing(n, pk.max_int, frac_bits=params.frac_bits):
        raise ProtocolError(
            f"setup from {guest!r}: packing {packing} does not fit the key and rows", peer=guest, tag="setup"
        )
    ckpt = ctx.workdir / CHECKPOINT_FILE
    resumed = _host_resume(ckpt, fingerprint) if params.resume else None
    done, st = resumed if resumed else (0, _HostState([], [], [], os.urandom(32)))
    link.send(guest, "resume_from", done)
    start = codec.expect_type(link.recv(guest, "start"), int, peer=guest, tag="start")
    if not 0 <= start <= done:
        raise ProtocolError(
            f"start {start} from {guest!r} is beyond this host's {done} trees", peer=guest, tag="start"
        )
    keep = [i for i, tr in enumerate(st.tree) if tr < start]
    st = _HostState(
        [st.tree[i] for i in keep], [st.feature[i] for i in keep], [st.threshold[i] for i in keep], st.key
    )
    bins, edges = tk.bin_features(ctx.data.x, params.max_bins, name=f"party {ctx.party!r}")
    run = _HostRun(link, guest, params, pk, spec, bins, edges, st, Timing(), ctx.executor)
    t = start
    started = time.perf_counter()
    while True:
        step = link.scope("tree", t)
        msg = codec.expect_type(step.recv(guest, "tree"), dict, peer=guest, tag="tree")
        if "finish" in msg:
            kept = codec.expect_type(msg["finish"], int, peer=guest, tag="tree")
            keep = [i for i, tr in enumerate(st.tree) if tr < kept]
            st = _HostState(
                [st.tree[i] for i in keep],
                [st.feature[i] for i in keep],
                [st.threshold[i] for i in keep],
                st.key,
            )
            break
        enc = EncArray.from_wire(msg.get("gh"), pk)
        if enc.shape != (n,) or enc.pack is not None:
            raise DecodeError(
                f"tree from {guest!r}: expected {n} ciphertexts, got shape {enc.shape}",
                peer=guest,
                tag="tree",
            )
        _host_tree(run, step, enc.ct, n, t)
        t += 1
        _host_checkpoint(ckpt, fingerprint, t, run.state)
        ctx.progress(f"tree {t} checkpointed", {"trees": t})
    task = setup.get("task") if setup.get("task") in ("binary", "regression", "multiclass") else "binary"
    model = SecureBoostHostModel(
        np.asarray(st.feature, dtype=np.int64), np.asarray(st.threshold, dtype=np.float64), str(task)
    )
    path = publish_model(ctx, model)
    elapsed = time.perf_counter() - started
    return {
        "splits": len(st.feature),
        "model_path": str(path),
        "seconds": round(elapsed, 4),
        "timing": run.timing.rounded(),
    }
