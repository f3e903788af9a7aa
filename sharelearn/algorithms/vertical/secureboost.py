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

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.context import BaselineData, StepContext, StepDef
from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.algorithms.package import publish_model
from sharelearn.algorithms.vertical import tree_kernels as tk
from sharelearn.algorithms.vertical.secureboost_model import (
    MODEL_FILE,
    Bystander,
    SecureBoostGuestModel,
    SecureBoostHostModel,
    Tree,
    guest_party,
    load_secureboost,
)
from sharelearn.algorithms.vertical.secureboost_params import (
    CHECKPOINT_FILE,
    GuestState,
    HostState,
    SecureBoostParams,
    Task,
    Timing,
    guest_checkpoint,
    guest_resume,
    host_checkpoint,
    host_resume,
    sample_masks,
    task_of,
    unpack_mask,
)
from sharelearn.algorithms.vertical.tree_kernels import F64, I64
from sharelearn.core.errors import ConfigError, DecodeError, ProtocolError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.messages import Decoders, Message, array, recv, send
from sharelearn.crypto import he
from sharelearn.crypto.he import EncArray
from sharelearn.operators import he_histogram as hh

__all__ = [
    "CHECKPOINT_FILE",
    "MODEL_FILE",
    "SECUREBOOST_STEP",
    "Child",
    "Children",
    "Cut",
    "Expand",
    "Hist",
    "Partition",
    "ResumeFrom",
    "SecureBoostGuestModel",
    "SecureBoostHostModel",
    "SecureBoostParams",
    "Setup",
    "Split",
    "Start",
    "TreeMsg",
    "Win",
    "baseline_secureboost",
    "load_secureboost",
    "run_host",
    "run_secureboost",
]

_MAX_FEATURES = 100_000


# -- messages, in the order they are sent -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Setup(Message):
    """guest -> host, once: the key, the rows, the run's fingerprint, the packing and the task."""

    TAG: ClassVar[str] = "setup"
    pk: he.HEPublicKey
    rows: int
    fingerprint: str
    resume: bool
    packing: tuple[int, ...]
    task: Task


@dataclass(frozen=True, slots=True)
class ResumeFrom(Message):
    """host -> guest: how many trees this host's checkpoint holds (0 without one)."""

    TAG: ClassVar[str] = "resume_from"
    trees: int


@dataclass(frozen=True, slots=True)
class Start(Message):
    """guest -> host: the tree every party starts from (the fewest any party completed)."""

    TAG: ClassVar[str] = "start"
    tree: int


@dataclass(frozen=True, slots=True)
class TreeMsg(Message):
    """guest -> host, per tree: the encrypted packed (g, h) of every row, or the final tree count."""

    TAG: ClassVar[str] = "tree"
    gh: EncArray | None = None
    finish: int | None = None

    def __post_init__(self) -> None:
        if (self.gh is None) == (self.finish is None):
            raise ValueError("a tree message carries either gh or finish")


@dataclass(frozen=True, slots=True)
class Expand(Message):
    """guest -> host, per depth: the nodes to expand (none: the tree is complete)."""

    TAG: ClassVar[str] = "expand"
    nodes: list[int]


@dataclass(frozen=True, slots=True)
class Hist(Message):
    """host -> guest, per depth: packed encrypted bin sums of its shuffled features, per node."""

    TAG: ClassVar[str] = "hist"
    features: int
    enc: EncArray


@dataclass(frozen=True, slots=True)
class Win(Message):
    """One node a host won: the tied (shuffled feature position, bin) candidates, shape (k, 2)."""

    node: int
    ties: np.ndarray = field(metadata=array(np.int64, ndim=2))

    def __post_init__(self) -> None:
        if self.ties.shape[1] != 2 or not 1 <= len(self.ties) <= tk.MAX_TIES:
            raise ValueError(f"ties must be 1..{tk.MAX_TIES} (position, bin) pairs, got {self.ties.shape}")


@dataclass(frozen=True, slots=True)
class Split(Message):
    """guest -> host, per depth: the nodes this host won."""

    TAG: ClassVar[str] = "split"
    wins: list[Win]


@dataclass(frozen=True, slots=True)
class Cut(Message):
    """A host's answer for one won node: its opaque split id and which rows go left (packed bits)."""

    split_id: int
    left: bytes


@dataclass(frozen=True, slots=True)
class Partition(Message):
    """host -> guest, per depth with wins: one cut per won node, in the order of `Split.wins`."""

    TAG: ClassVar[str] = "partition"
    cuts: list[Cut]


@dataclass(frozen=True, slots=True)
class Child(Message):
    """One split node: its children's ids and which of its rows go left (packed bits)."""

    node: int
    left: int
    right: int
    mask: bytes


@dataclass(frozen=True, slots=True)
class Children(Message):
    """guest -> every host, per depth: the partition of every node split at this depth."""

    TAG: ClassVar[str] = "children"
    children: list[Child]


def _decoders(pk: he.HEPublicKey) -> Decoders:
    return {EncArray: lambda w: EncArray.from_wire(w, pk)}


_SETUP_DECODERS: Decoders = {he.HEPublicKey: he.public_key_from_wire}


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

    @property
    def unit(self) -> F64:
        """What one fixed-point step of g and of h is worth in this tree."""
        return np.asarray(self.scales) / float(1 << self.spec.frac_bits)


@dataclass
class _Level:
    """One depth of the tree the guest grows: who won which node, and each split node's mask."""

    nodes: list[int]
    wins: dict[int, list[Win]]
    won: dict[int, list[int]]
    masks: dict[int, npt.NDArray[np.bool_]] = field(default_factory=dict)


def _recv_hist(run: _GuestRun, link: Link, host: str, nodes: int) -> npt.NDArray[np.int64]:
    msg = recv(link, host, Hist, decoders=_decoders(run.pk))
    if not 1 <= msg.features <= _MAX_FEATURES:
        raise DecodeError(
            f"hist from {host!r}: feature count {msg.features} out of range", peer=host, tag="hist"
        )
    entries = msg.features * run.params.max_bins
    if msg.enc.shape != (nodes, -(-entries // run.spec.pairs)) or msg.enc.pack is not None:
        raise DecodeError(
            f"hist from {host!r}: unexpected ciphertext shape {msg.enc.shape}", peer=host, tag="hist"
        )
    started = time.perf_counter()
    sums = hh.decompress(run.sk, msg.enc, run.spec, entries, executor=run.executor)
    run.timing.decrypt_s += time.perf_counter() - started
    return sums.reshape(nodes, msg.features, run.params.max_bins, 2)


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


def _guest_choose(
    run: _GuestRun, tree: Tree, lv: _Level, rows_of: dict[int, I64], gh: tuple[I64, I64], host_sums: list[Any]
) -> None:
    """Pick every node's best split over all parties; the guest's own wins get their mask now."""
    g_int, h_int = gh
    unit = run.unit
    for k, nd in enumerate(lv.nodes):
        rows = rows_of[nd]
        own = tk.histogram(
            run.bins, g_int.astype(np.float64), h_int.astype(np.float64), rows, run.params.max_bins
        )
        total = (float(g_int[rows].sum()) * unit[0], float(h_int[rows].sum()) * unit[1])
        best = _best(run, own * unit, [s[k].astype(np.float64) * unit for s in host_sums], total)
        if best is None:
            continue
        party, cand = best
        tree.owner[nd] = party
        if party < 0:
            tree.feature[nd] = cand.feature
            tree.threshold[nd] = float(run.edges[cand.feature][cand.bin])
            lv.masks[nd] = run.bins[rows, cand.feature] <= cand.bin
        else:
            lv.wins[party].append(Win(nd, np.asarray(cand.ties, dtype=np.int64).reshape(-1, 2)))
            lv.won[party].append(nd)


def _guest_partitions(run: _GuestRun, link: Link, tree: Tree, lv: _Level, rows_of: dict[int, I64]) -> None:
    """Tell each host the nodes it won; take its split ids and left masks back."""
    for i, host in enumerate(run.hosts):
        send(link, host, Split(lv.wins[i]))
    for i, host in enumerate(run.hosts):
        if not lv.wins[i]:
            continue
        cuts = recv(link, host, Partition).cuts
        if len(cuts) != len(lv.wins[i]):
            raise DecodeError(
                f"partition from {host!r}: {len(cuts)} answers for {len(lv.wins[i])} splits",
                peer=host,
                tag=Partition.TAG,
            )
        for nd, cut in zip(lv.won[i], cuts, strict=True):
            tree.split_id[nd] = cut.split_id
            lv.masks[nd] = unpack_mask(cut.left, len(rows_of[nd]), peer=host, tag=Partition.TAG)


def _guest_children(run: _GuestRun, link: Link, tree: Tree, lv: _Level, rows_of: dict[int, I64]) -> list[int]:
    """Add the children of every split node, tell every host; return the next level's nodes."""
    children: list[Child] = []
    nxt: list[int] = []
    for nd in lv.nodes:
        if nd not in lv.masks:
            continue
        mask = lv.masks[nd]
        left, right = tree.add(), tree.add()
        tree.left[nd], tree.right[nd] = left, right
        rows_of[left], rows_of[right] = rows_of[nd][mask], rows_of[nd][~mask]
        children.append(Child(nd, left, right, np.packbits(mask).tobytes()))
        nxt += [left, right]
    for host in run.hosts:
        send(link, host, Children(children))
    return nxt


def _guest_level(
    run: _GuestRun, link: Link, tree: Tree, level: list[int], rows_of: dict[int, I64], gh: tuple[I64, I64]
) -> list[int]:
    """Expand one depth: histograms, best splits, partitions; return the next level's nodes."""
    for host in run.hosts:
        send(link, host, Expand(level))
    started = time.perf_counter()
    host_sums = [_recv_hist(run, link, h, len(level)) for h in run.hosts]
    run.timing.wait_s += time.perf_counter() - started
    started = time.perf_counter()
    lv = _Level(level, {i: [] for i in range(len(run.hosts))}, {i: [] for i in range(len(run.hosts))})
    _guest_choose(run, tree, lv, rows_of, gh, host_sums)
    run.timing.split_s += time.perf_counter() - started
    _guest_partitions(run, link, tree, lv, rows_of)
    return _guest_children(run, link, tree, lv, rows_of)


def _grow_tree(run: _GuestRun, link: Link, g: F64, h: F64, cls: int) -> tuple[Tree, I64]:
    """Grow one tree on (g, h) (zero outside the sample); return it and every row's leaf."""
    run.scales = (float(np.max(np.abs(g))) or 1.0, float(np.max(np.abs(h))) or 1.0)
    packed, g_int, h_int = hh.encode_rows(g / run.scales[0], h / run.scales[1], run.spec)
    started = time.perf_counter()
    enc = he.encrypt(run.pk, packed, executor=run.executor)
    run.timing.encrypt_s += time.perf_counter() - started
    for host in run.hosts:
        send(link, host, TreeMsg(gh=enc))
    tree = Tree(cls=cls)
    rows_of: dict[int, I64] = {tree.add(): np.arange(len(g), dtype=np.int64)}
    level = [0]
    for depth in range(run.params.max_depth):
        step = link.scope("depth", depth)
        if not level:  # no node split: tell the hosts the tree is complete
            for host in run.hosts:
                send(step, host, Expand([]))
            break
        level = _guest_level(run, step, tree, level, rows_of, (g_int, h_int))
    leaf_of = np.zeros(len(g), dtype=np.int64)
    unit = run.unit
    for nd in range(len(tree.left)):
        if tree.left[nd] < 0:
            rows = rows_of[nd]
            total_g, total_h = float(g_int[rows].sum()) * unit[0], float(h_int[rows].sum()) * unit[1]
            tree.value[nd] = run.params.learning_rate * tk.leaf_weight(
                total_g, total_h, run.params.reg_lambda
            )
            leaf_of[rows] = nd
    return tree, leaf_of


def _guest_setup(
    ctx: StepContext, params: SecureBoostParams, hosts: list[str], task: Task, rank: I64
) -> tuple[_GuestRun, GuestState]:
    """Make the key, agree with every host on the tree to start from; resume the guest's state."""
    assert ctx.data is not None
    fingerprint = params.fingerprint(ctx.data.ids)
    state = guest_resume(ctx.workdir / CHECKPOINT_FILE, fingerprint, rank) if params.resume else None
    pk, sk = he.keygen(params.he_scheme, params.key_bits)
    spec = hh.make_packing(len(rank), pk.max_int, frac_bits=params.frac_bits)
    setup = Setup(pk, len(rank), fingerprint, params.resume, tuple(spec.to_wire()), task)
    for host in hosts:
        send(ctx.link, host, setup)
    done = [len(state.trees) if state else 0] + [recv(ctx.link, h, ResumeFrom).trees for h in hosts]
    start = min(done) if params.resume else 0
    for host in hosts:
        send(ctx.link, host, Start(start))
    state = state or GuestState([], [], {})
    state.trees, state.deltas = state.trees[:start], state.deltas[:start]
    bins, edges = tk.bin_features(ctx.data.x, params.max_bins, name=f"party {ctx.party!r}")
    run = _GuestRun(ctx.link, hosts, params, pk, sk, spec, bins, edges, Timing(), executor=ctx.executor)
    return run, state


@dataclass
class _Boost:
    """The guest's boosting loop: labels, the task, the row masks and the margins so far."""

    y: F64
    task: Task
    k: int
    base: list[float]
    valid: npt.NDArray[np.bool_]
    rounds: list[npt.NDArray[np.bool_]]
    grads: tuple[F64, F64] | None = None

    def margins(self, state: GuestState, upto: int) -> F64:
        """Every row's margin (n, k) after the first `upto` trees."""
        margin = np.tile(np.asarray(self.base), (len(self.y), 1))
        for tree, delta in zip(state.trees[:upto], state.deltas[:upto], strict=True):
            margin[:, tree.cls] += delta
        return margin

    def gradients(self, state: GuestState, t: int) -> tuple[F64, F64]:
        """(g, h) of tree t, zero outside its round's sample; fixed across a multiclass round."""
        r, c = divmod(t, self.k)
        if self.grads is None or c == 0:
            at = self.margins(state, r * self.k)
            g_all, h_all = tk.gradients(self.task, self.y, at if self.task == "multiclass" else at[:, 0])
            self.grads = (g_all.reshape(len(self.y), -1), h_all.reshape(len(self.y), -1))
        g, h = (np.where(self.rounds[r], a[:, c], 0.0) for a in self.grads)
        return g, h

    def record(self, state: GuestState) -> None:
        """Append the training (and validation) loss after a complete round."""
        margin = self.margins(state, len(state.trees))
        train, valid = ~self.valid, self.valid
        state.history.setdefault("train_loss", []).append(tk.loss(self.task, self.y[train], margin[train]))
        if valid.any():
            state.history.setdefault("valid_loss", []).append(
                tk.loss(self.task, self.y[valid], margin[valid])
            )


def _should_stop(params: SecureBoostParams, boost: _Boost, state: GuestState) -> bool:
    """True (and the trees cut back to the best round) after `early_stopping_rounds` without gain."""
    if not (params.early_stopping_rounds and boost.valid.any()):
        return False
    curve = state.history["valid_loss"]
    best = int(np.argmin(curve))
    if len(curve) - 1 - best < params.early_stopping_rounds:
        return False
    keep = (best + 1) * boost.k
    state.trees, state.deltas = state.trees[:keep], state.deltas[:keep]
    return True


def _guest_boost(
    ctx: StepContext, run: _GuestRun, boost: _Boost, state: GuestState, rank: I64
) -> tuple[int, bool]:
    """Grow trees until the budget is spent or early stopping fires; return (trees grown to, stopped)."""
    assert ctx.data is not None
    fingerprint = run.params.fingerprint(ctx.data.ids)
    t, total = len(state.trees), run.params.num_trees * boost.k
    while t < total:
        g, h = boost.gradients(state, t)
        tree, leaf_of = _grow_tree(run, ctx.link.scope("tree", t), g, h, t % boost.k)
        state.trees.append(tree)
        state.deltas.append(np.asarray(tree.value)[leaf_of])
        t += 1
        last_of_round = t % boost.k == 0
        if last_of_round:
            boost.record(state)
        guest_checkpoint(ctx.workdir / CHECKPOINT_FILE, fingerprint, state, rank)
        ctx.progress(f"tree {t}/{total} done", {"trees": t})
        if last_of_round and _should_stop(run.params, boost, state):
            return t, True
    return t, False


def _run_guest(ctx: StepContext, params: SecureBoostParams, hosts: list[str]) -> dict[str, Any]:
    assert ctx.data is not None
    y = np.asarray(ctx.data.y, dtype=np.float64) if ctx.data.y is not None else None
    task, k = task_of(params, y, ctx.party)
    assert y is not None
    rank = tk.id_rank(ctx.data.ids)
    valid, rounds = sample_masks(params, rank)
    boost = _Boost(y, task, k, tk.base_margin(task, y[~valid], k), valid, rounds)
    run, state = _guest_setup(ctx, params, hosts, boost.task, rank)
    resumed_from = len(state.trees)
    state.history = {key: curve[: resumed_from // k] for key, curve in state.history.items()}
    started = time.perf_counter()
    t, stopped = _guest_boost(ctx, run, boost, state, rank)
    for host in hosts:
        send(ctx.link.scope("tree", t), host, TreeMsg(finish=len(state.trees)))
    elapsed = time.perf_counter() - started
    path = publish_model(ctx, SecureBoostGuestModel(state.trees, hosts, boost.base, task, state.history))
    out: dict[str, Any] = {
        "trees": len(state.trees),
        "resumed_from": resumed_from,
        "early_stopped": stopped,
        "model_path": str(path),
        "seconds_per_tree": round(elapsed / max(1, t - resumed_from), 4),
        "timing": run.timing.rounded(),
        "he_scheme": params.he_scheme,
        "key_bits": params.key_bits,
    }
    if state.history.get("valid_loss"):
        out["best_valid_loss"] = round(min(state.history["valid_loss"]), 6)
    return out


# -- host -------------------------------------------------------------------------------------------
@dataclass
class _HostRun:
    link: Link
    guest: str
    params: SecureBoostParams
    pk: he.HEPublicKey
    spec: hh.GHPacking
    bins: npt.NDArray[np.int32]
    edges: list[F64]
    state: HostState
    timing: Timing
    executor: Executor | None = None  # the party's executor for HE batches (None: this thread)


@dataclass
class _HostTree:
    """The host's view of the tree being grown: the encrypted (g, h), rows and parent per node."""

    ct: Any
    t: int
    rows_of: dict[int, I64]
    parent_of: dict[int, int] = field(default_factory=dict)
    cache: dict[int, Any] = field(default_factory=dict)  # the previous level's encrypted sums


def _host_histograms(run: _HostRun, tr: _HostTree, level: list[int]) -> Any:
    """Per node of `level`: its encrypted bin sums with the features in the node's secret order."""
    b = run.params.max_bins
    done = tk.node_histograms(
        tr.ct, run.bins, level, tr.rows_of, tr.parent_of, tr.cache, run.pk.cipher_modulus, b
    )
    features = run.bins.shape[1]
    out = np.empty((len(level), features * b), dtype=object)
    for k, nd in enumerate(level):
        perm = tk.feature_permutation(run.state.key, tr.t, nd, features)
        out[k] = done[nd].reshape(features, b)[perm].ravel()
    return out


def _host_pick(run: _HostRun, win: Win, level: list[int], t: int) -> tuple[int, int, int]:
    """Map the guest's (node, tied (position, bin) candidates) to a real (feature, bin).

    Exact ties are broken by the real feature order, then bin: what a pooled booster would pick.
    """
    if win.node not in level:
        raise DecodeError(
            f"split from {run.guest!r}: node {win.node} is not being expanded", peer=run.guest, tag="split"
        )
    perm = tk.feature_permutation(run.state.key, t, win.node, run.bins.shape[1])
    picks = []
    for pos, b in win.ties.tolist():
        if not 0 <= pos < len(perm) or not 0 <= b < len(run.edges[int(perm[pos])]) - 1:
            raise DecodeError(
                f"split from {run.guest!r}: feature position {pos} / bin {b} out of range",
                peer=run.guest,
                tag=Split.TAG,
            )
        picks.append((int(perm[pos]), b))
    j, best_bin = min(picks)
    return win.node, j, best_bin


def _host_level(run: _HostRun, link: Link, tr: _HostTree, level: list[int]) -> None:
    """One depth at the host: histograms out, the splits it won in, the new partition in."""
    started = time.perf_counter()
    enc = hh.compress(_host_histograms(run, tr, level), run.spec, run.pk, executor=run.executor)
    run.timing.histogram_s += time.perf_counter() - started
    send(link, run.guest, Hist(run.bins.shape[1], enc))
    cuts: list[Cut] = []
    for win in recv(link, run.guest, Split).wins:
        nd, j, b = _host_pick(run, win, level, tr.t)
        run.state.tree.append(tr.t)
        run.state.feature.append(j)
        run.state.threshold.append(float(run.edges[j][b]))
        cuts.append(Cut(len(run.state.feature) - 1, np.packbits(run.bins[tr.rows_of[nd], j] <= b).tobytes()))
    if cuts:
        send(link, run.guest, Partition(cuts))
    for child in recv(link, run.guest, Children).children:
        if child.node not in level:
            raise DecodeError(
                f"children from {run.guest!r}: unknown node {child.node}", peer=run.guest, tag="children"
            )
        rows = tr.rows_of[child.node]
        mask = unpack_mask(child.mask, len(rows), peer=run.guest, tag=Children.TAG)
        tr.rows_of[child.left], tr.rows_of[child.right] = rows[mask], rows[~mask]
        tr.parent_of[child.left] = tr.parent_of[child.right] = child.node


def _host_tree(run: _HostRun, link: Link, ct: Any, n: int, t: int) -> None:
    tr = _HostTree(ct, t, {0: np.arange(n, dtype=np.int64)})
    for depth in range(run.params.max_depth):
        step = link.scope("depth", depth)
        level = recv(step, run.guest, Expand).nodes
        if not level:
            return
        if not all(v in tr.rows_of for v in level):
            raise DecodeError(f"expand from {run.guest!r}: unknown node ids", peer=run.guest, tag=Expand.TAG)
        _host_level(run, step, tr, level)


def _host_setup(ctx: StepContext, params: SecureBoostParams, guest: str) -> tuple[_HostRun, Setup, int]:
    """Check the guest's setup against this host's rows and parameters; agree on the start tree."""
    assert ctx.data is not None
    n, link = len(ctx.data), ctx.link
    setup = recv(link, guest, Setup, decoders=_SETUP_DECODERS)
    fingerprint = params.fingerprint(ctx.data.ids)
    if setup.rows != n or setup.fingerprint != fingerprint:
        raise ProtocolError(
            f"secureboost setup from {guest!r}: rows or parameters differ from {ctx.party!r}'s ({n} rows)",
            peer=guest,
            tag=Setup.TAG,
        )
    if len(setup.packing) != 3 or hh.GHPacking(*setup.packing) != hh.make_packing(
        n, setup.pk.max_int, frac_bits=params.frac_bits
    ):
        raise ProtocolError(
            f"setup from {guest!r}: packing {list(setup.packing)} does not fit the key and rows",
            peer=guest,
            tag="setup",
        )
    resumed = host_resume(ctx.workdir / CHECKPOINT_FILE, fingerprint) if params.resume else None
    done, st = resumed if resumed else (0, HostState([], [], [], os.urandom(32)))
    send(link, guest, ResumeFrom(done))
    start = recv(link, guest, Start).tree
    if not 0 <= start <= done:
        raise ProtocolError(
            f"start {start} from {guest!r} is beyond this host's {done} trees", peer=guest, tag="start"
        )
    bins, edges = tk.bin_features(ctx.data.x, params.max_bins, name=f"party {ctx.party!r}")
    spec = hh.GHPacking(*setup.packing)
    run = _HostRun(link, guest, params, setup.pk, spec, bins, edges, st.before(start), Timing(), ctx.executor)
    return run, setup, start


def _host_trees(ctx: StepContext, run: _HostRun, start: int, fingerprint: str) -> None:
    """Answer tree after tree until the guest says how many trees the model keeps."""
    n, t = len(run.bins), start
    while True:
        step = run.link.scope("tree", t)
        msg = recv(step, run.guest, TreeMsg, decoders=_decoders(run.pk))
        if msg.finish is not None:
            run.state = run.state.before(msg.finish)
            return
        assert msg.gh is not None
        if msg.gh.shape != (n,) or msg.gh.pack is not None:
            raise DecodeError(
                f"tree from {run.guest!r}: expected {n} ciphertexts, got shape {msg.gh.shape}",
                peer=run.guest,
                tag=TreeMsg.TAG,
            )
        _host_tree(run, step, msg.gh.ct, n, t)
        t += 1
        host_checkpoint(ctx.workdir / CHECKPOINT_FILE, fingerprint, t, run.state)
        ctx.progress(f"tree {t} checkpointed", {"trees": t})


def run_host(ctx: StepContext, params: SecureBoostParams, guest: str) -> dict[str, Any]:
    """The host's whole role: encrypted histograms of its features, a private split lookup table."""
    assert ctx.data is not None
    run, setup, start = _host_setup(ctx, params, guest)
    started = time.perf_counter()
    _host_trees(ctx, run, start, setup.fingerprint)
    st = run.state
    model = SecureBoostHostModel(
        np.asarray(st.feature, dtype=np.int64), np.asarray(st.threshold, dtype=np.float64), setup.task
    )
    path = publish_model(ctx, model)
    return {
        "splits": len(st.feature),
        "model_path": str(path),
        "seconds": round(time.perf_counter() - started, 4),
        "timing": run.timing.rounded(),
    }


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


def _xgboost_params(params: SecureBoostParams, task: Task, k: int, y_train: F64) -> dict[str, Any]:
    """XGBoost (hist) parameters that mirror SecureBoost's, with the same starting margin."""
    out: dict[str, Any] = {
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
        out.update(objective="binary:logistic", base_score=float(np.clip(y_train.mean(), 1e-6, 1 - 1e-6)))
    elif task == "regression":
        out.update(objective="reg:squarederror", base_score=float(y_train.mean()))
    else:
        out.update(objective="multi:softprob", num_class=k, base_score=0.5)
    return out


def baseline_secureboost(params: SecureBoostParams, datasets: Mapping[str, BaselineData]) -> dict[str, float]:
    """XGBoost (hist) with the same parameters on the pooled data; the metric `evaluate` reports."""
    import xgboost as xgb

    from sharelearn.algorithms.metrics import metrics_for

    x, y = pool_vertical(datasets)
    y = np.asarray(y, dtype=np.float64)
    task, k = task_of(params, y, "pooled data")
    valid, _ = sample_masks(params, np.arange(len(y)))  # pooled rows are in id order
    train = xgb.DMatrix(x[~valid], label=y[~valid])
    extra: dict[str, Any] = {}
    if params.early_stopping_rounds and valid.any():
        extra = {
            "evals": [(xgb.DMatrix(x[valid], label=y[valid]), "valid")],
            "early_stopping_rounds": params.early_stopping_rounds,
            "verbose_eval": False,
        }
    booster = xgb.train(_xgboost_params(params, task, k, y[~valid]), train, params.num_trees, **extra)
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
