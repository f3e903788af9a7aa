"""The `secureboost` step: vertical gradient-boosted trees (Cheng et al. 2019, "SecureBoost").

One guest holds the labels (and some features); one or more hosts hold other features of the same
rows. Per tree:

1. The guest computes g and h, scales them into [-1, 1], packs each row's pair into one plaintext
   and sends the ciphertexts of every row to every host (`tree`). Rows outside the training sample
   (row subsampling, the validation fraction) carry g = h = 0, so hosts cannot tell them apart.
2. Per depth, the guest names the nodes to expand (`expand`). Each host builds encrypted
   per-(feature, bin) histograms of each node, the smaller child directly and its sibling as
   parent - child, shuffles its features per node with a secret permutation, packs many bins
   into one ciphertext, re-randomises and sends them (`hist`; `operators.he_histogram`).
3. The guest decrypts, computes its own histograms in plaintext, and picks each node's best split
   over all parties. It tells each host the (shuffled feature position, bin) of the nodes that host
   won (`split`); the host turns it into a lookup-table entry (feature, threshold) that it keeps
   private and answers with an opaque split id and the rows that go left (`partition`).
4. The guest sends every host the left/right partition of every split node (`children`).

What leaks, by design of SecureBoost: the guest learns per-bin sums of g and h of every host
feature (in shuffled feature order) and the instance partition of every split; hosts learn the
partition of every split (including the guest's) but never a gradient, hessian or label in
plaintext; the guest never learns a host's threshold, feature id or raw value. Prediction is
collaborative: each host sends, for its lookup-table entries, which rows go left; only the guest
learns scores.

Models: the guest saves its trees (host splits as party + opaque split id), each host its lookup
table, in `secureboost_model.msgpack` in the party's workdir. Both checkpoint after every tree
(`secureboost_checkpoint.msgpack`, atomic); `resume: true` restarts from the last tree every party
completed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.context import BaselineData, StepContext, StepDef
from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.algorithms.modelstore import save_model
from sharelearn.algorithms.package import publish_model
from sharelearn.algorithms.vertical import tree_kernels as tk
from sharelearn.algorithms.vertical.secureboost_host import run_host
from sharelearn.algorithms.vertical.secureboost_model import (
    MODEL_FILE,
    Bystander,
    SecureBoostGuestModel,
    SecureBoostHostModel,
    Tree,
    guest_party,
    load_secureboost,
    trees_from_arrays,
    trees_to_arrays,
)
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
from sharelearn.core.errors import ConfigError, DataError, DecodeError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.types import Wire
from sharelearn.crypto import he
from sharelearn.crypto.he import EncArray
from sharelearn.operators import he_histogram as hh

__all__ = [
    "CHECKPOINT_FILE",
    "MODEL_FILE",
    "SECUREBOOST_STEP",
    "SecureBoostGuestModel",
    "SecureBoostHostModel",
    "SecureBoostParams",
    "baseline_secureboost",
    "load_secureboost",
    "run_secureboost",
]

_MAX_FEATURES = 100_000


# -- guest ------------------------------------------------------------------------------------------
@dataclass
class _GuestRun:
    """Everything the guest needs to grow a tree."""

    link: Link
    hosts: list[str]
    params: SecureBoostParams
    pk: he.HEPublicKey
    sk: he.HEPrivateKey
    spec: hh.GHPacking
    bins: npt.NDArray[np.int32]
    edges: list[F64]
    timing: Timing
    scales: tuple[float, float] = (1.0, 1.0)
    executor: Executor | None = None  # the party's executor for HE batches (None: this thread)


def _task(params: SecureBoostParams, y: np.ndarray | None, party: str) -> tuple[str, int]:
    if y is None:
        raise DataError(f"secureboost: the guest {party!r} holds no label column")
    if not np.all(np.isfinite(y)):
        raise DataError(f"secureboost: the guest {party!r} label column has non-finite values")
    if params.objective == "binary":
        if not np.isin(y, (0.0, 1.0)).all():
            raise DataError(f"secureboost objective binary needs 0/1 labels at {party!r}")
        return "binary", 1
    if params.objective == "regression":
        return "regression", 1
    if np.any(y < 0) or np.any(y != np.round(y)):
        raise DataError(f"secureboost objective multiclass needs labels 0..k-1 at {party!r}")
    return "multiclass", max(2, int(y.max()) + 1)


def _base_margin(task: str, y: F64, k: int) -> list[float]:
    if task == "binary":
        p = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        return [float(np.log(p / (1 - p)))]
    if task == "regression":
        return [float(y.mean())]
    return [0.0] * k


def _loss(task: str, y: F64, margin: F64) -> float:
    if task == "binary":
        m = margin[:, 0]
        return float(np.mean(np.logaddexp(0.0, m) - y * m))
    if task == "regression":
        return float(np.sqrt(np.mean((margin[:, 0] - y) ** 2)))
    logp = margin - margin.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y.astype(np.int64)]))


def _recv_hist(run: _GuestRun, link: Link, host: str, nodes: int) -> npt.NDArray[np.int64]:
    msg = codec.expect_type(link.recv(host, "hist"), dict, peer=host, tag="hist")
    features = codec.expect_type(msg.get("features"), int, peer=host, tag="hist")
    if not 1 <= features <= _MAX_FEATURES:
        raise DecodeError(f"hist from {host!r}: feature count {features} out of range", peer=host, tag="hist")
    entries = features * run.params.max_bins
    enc = EncArray.from_wire(msg.get("enc"), run.pk)
    if enc.shape != (nodes, -(-entries // run.spec.pairs)) or enc.pack is not None:
        raise DecodeError(
            f"hist from {host!r}: unexpected ciphertext shape {enc.shape}", peer=host, tag="hist"
        )
    started = time.perf_counter()
    sums = hh.decompress(run.sk, enc, run.spec, entries, executor=run.executor)
    run.timing.decrypt_s += time.perf_counter() - started
    return sums.reshape(nodes, features, run.params.max_bins, 2)


def _best(
    run: _GuestRun, own: F64, hosts: list[F64], total: tuple[float, float]
) -> tuple[int, tk.SplitCandidate] | None:
    """The best split of one node: party -1 (guest) then hosts in order win ties."""
    p = run.params
    best: tuple[int, tk.SplitCandidate] | None = None
    for party, hist in [(-1, own), *enumerate(hosts)]:
        cand = tk.best_split(
            hist, *total, lam=p.reg_lambda, gamma=p.gamma, min_child_weight=p.min_child_weight
        )
        if cand is not None and (best is None or cand.gain > best[1].gain):
            best = (party, cand)
    return best


def _guest_level(
    run: _GuestRun, link: Link, tree: Tree, level: list[int], rows_of: dict[int, I64], gh: tuple[I64, I64]
) -> list[int]:
    """Expand one depth: histograms, best splits, partitions; return the next level's nodes."""
    for host in run.hosts:
        link.send(host, "expand", list[Wire](level))
    scale = np.asarray(run.scales) / float(1 << run.spec.frac_bits)
    started = time.perf_counter()
    host_sums = [_recv_hist(run, link, h, len(level)) for h in run.hosts]
    run.timing.wait_s += time.perf_counter() - started
    started = time.perf_counter()
    g_int, h_int = gh
    wins: dict[int, list[Wire]] = {i: [] for i in range(len(run.hosts))}
    won: dict[int, list[int]] = {i: [] for i in range(len(run.hosts))}
    masks: dict[int, npt.NDArray[np.bool_]] = {}
    for k, nd in enumerate(level):
        rows = rows_of[nd]
        own = (
            tk.histogram(
                run.bins, g_int.astype(np.float64), h_int.astype(np.float64), rows, run.params.max_bins
            )
            * scale
        )
        total = (float(g_int[rows].sum()) * scale[0], float(h_int[rows].sum()) * scale[1])
        best = _best(run, own, [s[k].astype(np.float64) * scale for s in host_sums], total)
        if best is None:
            continue
        party, cand = best
        tree.owner[nd] = party
        if party < 0:
            tree.feature[nd] = cand.feature
            tree.threshold[nd] = float(run.edges[cand.feature][cand.bin])
            masks[nd] = run.bins[rows, cand.feature] <= cand.bin
        else:
            wins[party].append([nd, [[f, b] for f, b in cand.ties]])
            won[party].append(nd)
    run.timing.split_s += time.perf_counter() - started
    for i, host in enumerate(run.hosts):
        link.send(host, "split", wins[i])
    for i, host in enumerate(run.hosts):
        if not wins[i]:
            continue
        answer = codec.expect_type(link.recv(host, "partition"), list, peer=host, tag="partition")
        if len(answer) != len(wins[i]):
            raise DecodeError(
                f"partition from {host!r}: {len(answer)} answers for {len(wins[i])} splits",
                peer=host,
                tag="partition",
            )
        for nd, item in zip(won[i], answer, strict=True):
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[0], int)
                or isinstance(item[0], bool)
            ):
                raise DecodeError(f"partition from {host!r}: malformed entry", peer=host, tag="partition")
            tree.split_id[nd] = item[0]
            masks[nd] = unpack_mask(item[1], len(rows_of[nd]), peer=host, tag="partition")
    children: list[Wire] = []
    nxt: list[int] = []
    for nd in level:
        if nd not in masks:
            continue
        left, right = tree.add(), tree.add()
        tree.left[nd], tree.right[nd] = left, right
        rows_of[left], rows_of[right] = rows_of[nd][masks[nd]], rows_of[nd][~masks[nd]]
        children.append([nd, left, right, np.packbits(masks[nd]).tobytes()])
        nxt += [left, right]
    for host in run.hosts:
        link.send(host, "children", children)
    return nxt


def _grow_tree(run: _GuestRun, link: Link, g: F64, h: F64, cls: int) -> tuple[Tree, I64]:
    """Grow one tree on (g, h) (zero outside the sample); return it and every row's leaf."""
    gs = float(np.max(np.abs(g))) or 1.0
    hs = float(np.max(np.abs(h))) or 1.0
    run.scales = (gs, hs)
    packed, g_int, h_int = hh.encode_rows(g / gs, h / hs, run.spec)
    started = time.perf_counter()
    wire = he.encrypt(run.pk, packed, executor=run.executor).to_wire()
    run.timing.encrypt_s += time.perf_counter() - started
    for host in run.hosts:
        link.send(host, "tree", {"gh": wire})
    tree = Tree(cls=cls)
    root = tree.add()
    rows_of: dict[int, I64] = {root: np.arange(len(g), dtype=np.int64)}
    level = [root]
    for depth in range(run.params.max_depth):
        step = link.scope("depth", depth)
        if not level:  # no node split: tell the hosts the tree is complete
            for host in run.hosts:
                step.send(host, "expand", [])
            break
        level = _guest_level(run, step, tree, level, rows_of, (g_int, h_int))
    leaf_of = np.zeros(len(g), dtype=np.int64)
    scale = np.asarray([gs, hs]) / float(1 << run.spec.frac_bits)
    for nd in range(len(tree.left)):
        if tree.left[nd] < 0:
            rows = rows_of[nd]
            total_g, total_h = float(g_int[rows].sum()) * scale[0], float(h_int[rows].sum()) * scale[1]
            tree.value[nd] = run.params.learning_rate * tk.leaf_weight(
                total_g, total_h, run.params.reg_lambda
            )
            leaf_of[rows] = nd
    return tree, leaf_of


@dataclass
class _GuestState:
    trees: list[Tree]
    deltas: list[F64]
    history: dict[str, list[float]]


def _id_rank(ids: np.ndarray) -> I64:
    """Each row's position in id order: sampling and checkpoints follow ids, not the PSI row order."""
    order = np.argsort(np.asarray([str(i) for i in ids], dtype=object), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _guest_checkpoint(path: Path, fingerprint: str, state: _GuestState, rank: I64) -> None:
    arrays = trees_to_arrays(state.trees)
    by_id = np.zeros((len(state.deltas), len(rank)))
    if state.deltas:
        by_id[:, rank] = np.stack(state.deltas)
    arrays["deltas"] = by_id
    meta = {"fingerprint": fingerprint, "trees": len(state.trees), "history": state.history}
    save_model(path, CHECKPOINT_STEP, meta, arrays)


def _guest_resume(path: Path, fingerprint: str, rank: I64) -> _GuestState | None:
    found = load_checkpoint(path, fingerprint)
    if found is None:
        return None
    meta, arrays = found
    trees = trees_from_arrays(arrays, str(path))
    deltas = [np.asarray(d, dtype=np.float64)[rank] for d in arrays["deltas"]]
    history = {str(k): [float(x) for x in v] for k, v in dict(meta.get("history") or {}).items()}
    return _GuestState(trees, deltas, history)


def _sample_masks(
    params: SecureBoostParams, rank: I64
) -> tuple[npt.NDArray[np.bool_], list[npt.NDArray[np.bool_]]]:
    """The validation rows and, per round, the sampled training rows (seeded, in id order)."""
    n = len(rank)
    valid = np.zeros(n, dtype=bool)
    if params.validation_fraction:
        pick = np.random.default_rng([params.seed, 1]).permutation(n)[: round(n * params.validation_fraction)]
        valid[pick] = True
    valid = valid[rank]
    rounds = []
    for r in range(params.num_trees):
        active = ~valid
        if params.subsample < 1.0:
            active = active & (np.random.default_rng([params.seed, 2, r]).random(n)[rank] < params.subsample)
        rounds.append(active)
    return valid, rounds


def _guest_setup(
    ctx: StepContext, params: SecureBoostParams, hosts: list[str], task: str, rank: I64
) -> tuple[_GuestRun, _GuestState]:
    assert ctx.data is not None
    n = len(rank)
    fingerprint = params.fingerprint(ctx.data.ids)
    ckpt = ctx.workdir / CHECKPOINT_FILE
    state = _guest_resume(ckpt, fingerprint, rank) if params.resume else None
    pk, sk = he.keygen(params.he_scheme, params.key_bits)
    spec = hh.make_packing(n, pk.max_int, frac_bits=params.frac_bits)
    for host in hosts:
        ctx.link.send(
            host,
            "setup",
            {
                "pk": pk.to_wire(),
                "rows": n,
                "fingerprint": fingerprint,
                "resume": params.resume,
                "packing": list[Wire](spec.to_wire()),
                "task": task,
            },
        )
    done = [len(state.trees) if state else 0]
    for host in hosts:
        done.append(codec.expect_type(ctx.link.recv(host, "resume_from"), int, peer=host, tag="resume_from"))
    start = min(done) if params.resume else 0
    for host in hosts:
        ctx.link.send(host, "start", start)
    if state is None:
        state = _GuestState([], [], {})
    state.trees, state.deltas = state.trees[:start], state.deltas[:start]
    bins, edges = tk.bin_features(ctx.data.x, params.max_bins, name=f"party {ctx.party!r}")
    run = _GuestRun(ctx.link, hosts, params, pk, sk, spec, bins, edges, Timing(), executor=ctx.executor)
    return run, state


def _run_guest(ctx: StepContext, params: SecureBoostParams, hosts: list[str]) -> dict[str, Any]:
    assert ctx.data is not None
    y = np.asarray(ctx.data.y, dtype=np.float64) if ctx.data.y is not None else None
    task, k = _task(params, y, ctx.party)
    assert y is not None
    n = len(y)
    rank = _id_rank(ctx.data.ids)
    valid, rounds = _sample_masks(params, rank)
    base = _base_margin(task, y[~valid], k)
    run, state = _guest_setup(ctx, params, hosts, task, rank)
    resumed_from = len(state.trees)
    state.history = {key: curve[: resumed_from // k] for key, curve in state.history.items()}
    fingerprint = params.fingerprint(ctx.data.ids)
    started = time.perf_counter()
    t, total, stopped = len(state.trees), params.num_trees * k, False
    grads: tuple[F64, F64] | None = None
    while t < total:
        r, c = divmod(t, k)
        margin = np.tile(np.asarray(base), (n, 1))
        for tree, delta in zip(state.trees, state.deltas, strict=True):
            margin[:, tree.cls] += delta
        if grads is None or c == 0:
            round_margin = margin.copy()
            for tree, delta in zip(state.trees[r * k : t], state.deltas[r * k : t], strict=True):
                round_margin[:, tree.cls] -= delta
            g_all, h_all = tk.gradients(task, y, round_margin if task == "multiclass" else round_margin[:, 0])
            grads = (g_all.reshape(n, -1), h_all.reshape(n, -1))
        g, h = (np.where(rounds[r], a[:, c], 0.0) for a in grads)
        tree, leaf_of = _grow_tree(run, ctx.link.scope("tree", t), g, h, c)
        state.trees.append(tree)
        state.deltas.append(np.asarray(tree.value)[leaf_of])
        margin[:, c] += state.deltas[-1]
        t += 1
        if c == k - 1:
            state.history.setdefault("train_loss", []).append(_loss(task, y[~valid], margin[~valid]))
            if valid.any():
                state.history.setdefault("valid_loss", []).append(_loss(task, y[valid], margin[valid]))
        _guest_checkpoint(ctx.workdir / CHECKPOINT_FILE, fingerprint, state, rank)
        ctx.progress(f"tree {t}/{total} done", {"trees": t})
        if c == k - 1 and params.early_stopping_rounds and valid.any():
            curve = state.history["valid_loss"]
            best = int(np.argmin(curve))
            if len(curve) - 1 - best >= params.early_stopping_rounds:
                keep = (best + 1) * k
                state.trees, state.deltas = state.trees[:keep], state.deltas[:keep]
                stopped = True
                break
    for host in hosts:
        ctx.link.scope("tree", t).send(host, "tree", {"finish": len(state.trees)})
    elapsed = time.perf_counter() - started
    model = SecureBoostGuestModel(state.trees, hosts, base, task, state.history)
    path = publish_model(ctx, model)
    grown = max(1, t - resumed_from)
    out = {
        "trees": len(state.trees),
        "resumed_from": resumed_from,
        "early_stopped": stopped,
        "model_path": str(path),
        "seconds_per_tree": round(elapsed / grown, 4),
        "timing": run.timing.rounded(),
        "he_scheme": params.he_scheme,
        "key_bits": params.key_bits,
    }
    if state.history.get("valid_loss"):
        out["best_valid_loss"] = round(min(state.history["valid_loss"]), 6)
    return out


# -- the step ---------------------------------------------------------------------------------------
def run_secureboost(ctx: StepContext, params: SecureBoostParams) -> dict[str, Any]:
    """Run this party's role of SecureBoost training (guest: labels; host: features)."""
    if ctx.role not in ("guest", "host"):
        publish_model(ctx, Bystander())  # e.g. an arbiter: it takes no part in evaluate / predict
        return {}
    guest = guest_party(ctx)
    hosts = [p for p in ctx.data_parties if ctx.roles[p] == "host"]
    if not hosts:
        raise ConfigError("secureboost needs at least one party with role host and data")
    if ctx.data is None:
        raise ConfigError(f"secureboost: party {ctx.party!r} ({ctx.role}) has no data")
    if ctx.role == "guest":
        return _run_guest(ctx, params, hosts)
    return run_host(ctx, params, guest)


def baseline_secureboost(params: SecureBoostParams, datasets: Mapping[str, BaselineData]) -> dict[str, float]:
    """XGBoost (hist) with the same parameters on the pooled data; the metric `evaluate` reports."""
    import xgboost as xgb

    from sharelearn.algorithms.metrics import metrics_for

    x, y = pool_vertical(datasets)
    y = np.asarray(y, dtype=np.float64)
    task, k = _task(params, y, "pooled data")
    valid, _ = _sample_masks(params, np.arange(len(y)))  # pooled rows are in id order
    booster_params: dict[str, Any] = {
        "tree_method": "hist",
        "max_depth": params.max_depth,
        "eta": params.learning_rate,
        "lambda": params.reg_lambda,
        "gamma": params.gamma,
        "min_child_weight": params.min_child_weight,
        "max_bin": params.max_bins,
        "subsample": params.subsample,
        "seed": params.seed,
        "nthread": 1,
    }
    if task == "binary":
        booster_params.update(
            objective="binary:logistic", base_score=float(np.clip(y[~valid].mean(), 1e-6, 1 - 1e-6))
        )
    elif task == "regression":
        booster_params.update(objective="reg:squarederror", base_score=float(y[~valid].mean()))
    else:
        booster_params.update(objective="multi:softprob", num_class=k, base_score=0.5)
    train = xgb.DMatrix(x[~valid], label=y[~valid])
    extra: dict[str, Any] = {}
    if params.early_stopping_rounds and valid.any():
        extra = {
            "evals": [(xgb.DMatrix(x[valid], label=y[valid]), "valid")],
            "early_stopping_rounds": params.early_stopping_rounds,
            "verbose_eval": False,
        }
    booster = xgb.train(booster_params, train, num_boost_round=params.num_trees, **extra)
    scores = np.asarray(booster.predict(xgb.DMatrix(x)), dtype=np.float64)
    if task == "multiclass":
        scores = scores / scores.sum(axis=1, keepdims=True)  # float32 rounding leaves sums != 1
    metric = {"binary": "auc", "regression": "rmse", "multiclass": "accuracy"}[task]
    return {metric: metrics_for(task, y, scores)[metric]}


SECUREBOOST_STEP = StepDef(
    "secureboost",
    SecureBoostParams,
    run_secureboost,
    "vertical gradient-boosted trees (SecureBoost) with encrypted packed histograms",
    load=load_secureboost,
    baseline=baseline_secureboost,
)
