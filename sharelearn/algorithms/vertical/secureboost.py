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

import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.context import BaselineData, Dataset, StepContext, StepDef
from sharelearn.algorithms.evaluation import pool_vertical
from sharelearn.algorithms.modelstore import load_model, save_model
from sharelearn.algorithms.vertical import tree_kernels as tk
from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, DataError, DecodeError, ProtocolError
from sharelearn.core.link import Link
from sharelearn.core.types import Wire
from sharelearn.crypto import he
from sharelearn.crypto.encarray import EncArray
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

MODEL_FILE = "secureboost_model.msgpack"
CHECKPOINT_FILE = "secureboost_checkpoint.msgpack"
_CHECKPOINT_STEP = "secureboost-checkpoint"
_MAX_FEATURES = 100_000
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SecureBoostParams:
    """Parameters of `secureboost` (XGBoost's names where they exist).

    Attributes:
        num_trees: boosting rounds (multiclass: one tree per class per round).
        max_depth: depth of every tree.
        max_bins: quantile bins per feature.
        learning_rate: shrinkage of every leaf weight (XGBoost's eta).
        objective: binary (logistic), regression (squared error) or multiclass (softmax).
        reg_lambda: L2 regularisation of leaf weights (XGBoost's lambda; job files may write `lambda`).
        gamma: minimum loss reduction of a split (XGBoost's gamma / min_split_loss).
        min_child_weight: minimum hessian sum of a child.
        subsample: fraction of training rows sampled per round.
        validation_fraction: rows held out (at the guest) for early stopping; 0 disables it.
        early_stopping_rounds: stop after this many rounds without a better validation loss.
        he_scheme: paillier or ou (Okamoto–Uchiyama, faster).
        key_bits: modulus size of the guest's key.
        frac_bits: fixed-point precision of the scaled gradients (2^-frac_bits).
        seed: seed of the row sampling and validation split (deterministic resume).
        resume: continue from the checkpoint in the party's workdir.
        workers: threads for the crypto kernels; 0 = every core.
    """

    num_trees: int = 30
    max_depth: int = 3
    max_bins: int = 32
    learning_rate: float = 0.3
    objective: Literal["binary", "regression", "multiclass"] = "binary"
    reg_lambda: float = field(default=1.0, metadata={"alias": "lambda"})
    gamma: float = 0.0
    min_child_weight: float = 1.0
    subsample: float = 1.0
    validation_fraction: float = 0.0
    early_stopping_rounds: int = 0
    he_scheme: Literal["paillier", "ou"] = "ou"
    key_bits: int = he.DEFAULT_KEY_BITS
    frac_bits: int = hh.DEFAULT_FRAC_BITS
    seed: int = 0
    resume: bool = False
    workers: int = 0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.num_trees <= 10_000, "num_trees must be in 1..10000"),
            (1 <= self.max_depth <= 16, "max_depth must be in 1..16"),
            (2 <= self.max_bins <= 1024, "max_bins must be in 2..1024"),
            (0.0 < self.learning_rate <= 1.0, "learning_rate must be in (0, 1]"),
            (
                self.objective in ("binary", "regression", "multiclass"),
                "objective must be binary, regression or multiclass",
            ),
            (self.reg_lambda >= 0.0, "reg_lambda must be >= 0"),
            (self.gamma >= 0.0, "gamma must be >= 0"),
            (self.min_child_weight >= 0.0, "min_child_weight must be >= 0"),
            (0.0 < self.subsample <= 1.0, "subsample must be in (0, 1]"),
            (0.0 <= self.validation_fraction < 0.5, "validation_fraction must be in [0, 0.5)"),
            (self.early_stopping_rounds >= 0, "early_stopping_rounds must be >= 0"),
            (self.he_scheme in he.SCHEMES, f"he_scheme must be one of {he.SCHEMES}"),
            (1024 <= self.key_bits <= 4096, "key_bits must be in 1024..4096"),
            (8 <= self.frac_bits <= 52, "frac_bits must be in 8..52"),
            (self.workers >= 0, "workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"secureboost.{message}")
        if self.early_stopping_rounds and not self.validation_fraction:
            raise ConfigError("secureboost.early_stopping_rounds needs a validation_fraction > 0")

    def fingerprint(self, ids: np.ndarray) -> str:
        """Identify a training run (parameters and the set of row ids, not resume/worker settings)."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("resume", "workers")}
        digest = hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()
        raw = json.dumps({"params": fields, "ids": digest}, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:32]


# -- trees ------------------------------------------------------------------------------------------
@dataclass
class _Tree:
    """One tree at the guest. owner -1 = the guest's own split; owner h = hosts[h], split_id opaque."""

    cls: int = 0
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    feature: list[int] = field(default_factory=list)
    split_id: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add(self) -> int:
        for name in ("left", "right", "owner", "feature", "split_id"):
            getattr(self, name).append(-1)
        self.threshold.append(0.0)
        self.value.append(0.0)
        return len(self.left) - 1


_INT_FIELDS = ("left", "right", "owner", "feature", "split_id")


def _trees_to_arrays(trees: Sequence[_Tree]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "tree_sizes": np.asarray([len(t.left) for t in trees], dtype=np.int64),
        "tree_class": np.asarray([t.cls for t in trees], dtype=np.int64),
    }
    for name in (*_INT_FIELDS, "threshold", "value"):
        dtype = np.int64 if name in _INT_FIELDS else np.float64
        out[name] = np.asarray([v for t in trees for v in getattr(t, name)], dtype=dtype)
    return out


def _trees_from_arrays(arrays: Mapping[str, np.ndarray], source: str) -> list[_Tree]:
    try:
        sizes, classes = arrays["tree_sizes"].tolist(), arrays["tree_class"].tolist()
        total = int(sum(sizes))
        columns = {n: arrays[n].tolist() for n in (*_INT_FIELDS, "threshold", "value")}
    except KeyError as exc:
        raise DataError(f"{source}: secureboost trees lack array {exc}") from None
    if any(len(v) != total for v in columns.values()):
        raise DataError(f"{source}: secureboost tree arrays have inconsistent lengths")
    trees, start = [], 0
    for size, cls in zip(sizes, classes, strict=True):
        part = {n: v[start : start + size] for n, v in columns.items()}
        trees.append(_Tree(cls=int(cls), **part))
        start += size
    return trees


def _decider(tree: _Tree, x: F64, masks: Sequence[npt.NDArray[np.bool_]]) -> Any:
    """goes_left(node, positions) for prediction: the guest's own splits, else the hosts' masks."""
    feat, thr = np.asarray(tree.feature), np.asarray(tree.threshold)
    owner, sid = np.asarray(tree.owner), np.asarray(tree.split_id)

    def goes_left(nd: int, at: I64) -> Any:
        if owner[nd] < 0:
            return x[at, feat[nd]] <= thr[nd]
        return masks[owner[nd]][sid[nd], at]

    return goes_left


def _route(tree: _Tree, rows: int, goes_left: Any) -> I64:
    """Leaf of every row; goes_left(node, positions) -> bool mask of those rows going left."""
    node = np.zeros(rows, dtype=np.int64)
    left, right = np.asarray(tree.left), np.asarray(tree.right)
    while True:
        inner = np.flatnonzero(left[node] >= 0)
        if inner.size == 0:
            return node
        for nd in np.unique(node[inner]).tolist():
            at = inner[node[inner] == nd]
            mask = goes_left(nd, at)
            node[at] = np.where(mask, left[nd], right[nd])


# -- the models -------------------------------------------------------------------------------------
def _guest_party(ctx: StepContext) -> str:
    guests = [p for p, r in ctx.roles.items() if r == "guest"]
    if len(guests) != 1:
        raise ConfigError(f"secureboost needs exactly one party with role guest, the job has {guests}")
    return guests[0]


@dataclass
class SecureBoostGuestModel:
    """The guest's part: trees whose host splits are (host, opaque split id); scores stay here."""

    trees: list[_Tree]
    hosts: list[str]
    base: list[float]
    task: str
    history: dict[str, list[float]] = field(default_factory=dict)
    step: str = "secureboost"

    def margins(self, x: F64, masks: Sequence[npt.NDArray[np.bool_]]) -> F64:
        """Raw scores (n, k) given the hosts' go-left masks (entries, n)."""
        out = np.tile(np.asarray(self.base, dtype=np.float64), (x.shape[0], 1))
        for tree in self.trees:
            leaves = _route(tree, x.shape[0], _decider(tree, x, masks))
            out[:, tree.cls] += np.asarray(tree.value)[leaves]
        return out

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        if data is None:
            raise DataError(f"secureboost: the guest {ctx.party!r} has no data to predict")
        link = ctx.link.scope("secureboost", "predict")
        rows = len(data)
        masks = []
        for host in self.hosts:
            if host not in ctx.roles:
                raise ConfigError(
                    f"secureboost model expects host party {host!r}; the job has {list(ctx.roles)}"
                )
            bits = codec.expect_array(
                link.recv(host, "goes_left"), peer=host, tag="goes_left", dtype=np.uint8
            )
            if bits.ndim != 2 or bits.shape[1] != (rows + 7) // 8:
                raise DecodeError(
                    f"goes_left from {host!r} has shape {bits.shape} for {rows} rows",
                    peer=host,
                    tag="goes_left",
                )
            masks.append(np.unpackbits(bits, axis=1, count=rows).astype(bool))
        for tree in self.trees:
            for nd, (o, s) in enumerate(zip(tree.owner, tree.split_id, strict=True)):
                if tree.left[nd] >= 0 and o >= 0 and not 0 <= s < masks[o].shape[0]:
                    raise ProtocolError(
                        f"host {self.hosts[o]!r} sent no decision for split {s}", peer=self.hosts[o]
                    )
        return _link_scores(self.task, self.margins(np.asarray(data.x, dtype=np.float64), masks))

    def save(self, path: Path) -> Path:
        meta = {
            "role": "guest",
            "hosts": self.hosts,
            "base": self.base,
            "task": self.task,
            "history": self.history,
        }
        return save_model(path, "secureboost", meta, _trees_to_arrays(self.trees))


@dataclass
class SecureBoostHostModel:
    """A host's part: its private lookup table (feature, threshold) per split id."""

    feature: I64
    threshold: F64
    task: str
    history: dict[str, list[float]] = field(default_factory=dict)
    step: str = "secureboost"

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        if data is None:
            raise DataError(f"secureboost: host {ctx.party!r} has no data to predict")
        x = np.asarray(data.x, dtype=np.float64)
        if self.feature.size and int(self.feature.max()) >= x.shape[1]:
            raise DataError(
                f"secureboost: host {ctx.party!r} model uses feature {int(self.feature.max())}, "
                f"data has {x.shape[1]}"
            )
        left = (
            self.threshold[:, None] >= x[:, self.feature].T
            if self.feature.size
            else np.zeros((0, len(x)), bool)
        )
        bits = np.packbits(left, axis=1) if left.size else np.zeros((0, (len(x) + 7) // 8), np.uint8)
        ctx.link.scope("secureboost", "predict").send(_guest_party(ctx), "goes_left", bits)
        return None

    def save(self, path: Path) -> Path:
        meta = {"role": "host", "task": self.task}
        return save_model(path, "secureboost", meta, {"feature": self.feature, "threshold": self.threshold})


@dataclass
class _Bystander:
    """The part of a party with no role in SecureBoost: it predicts nothing and saves nothing."""

    task: str = "binary"
    history: dict[str, list[float]] = field(default_factory=dict)
    step: str = "secureboost"

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        return None

    def save(self, path: Path) -> Path:
        raise ConfigError("secureboost: a party without a guest or host role holds no model to save")


def _link_scores(task: str, margin: F64) -> np.ndarray:
    if task == "binary":
        return np.asarray(1.0 / (1.0 + np.exp(-margin[:, 0])))
    if task == "regression":
        return margin[:, 0]
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def load_secureboost(path: Path) -> SecureBoostGuestModel | SecureBoostHostModel:
    """Read one party's model file (guest trees or a host's lookup table)."""
    meta, arrays = load_model(path, "secureboost")
    role = meta.get("role")
    if role == "host":
        try:
            return SecureBoostHostModel(
                arrays["feature"].astype(np.int64), arrays["threshold"].astype(np.float64), str(meta["task"])
            )
        except KeyError as exc:
            raise DataError(f"model file {str(path)!r}: host part lacks {exc}") from None
    if role != "guest":
        raise DataError(f"model file {str(path)!r}: unknown secureboost role {role!r}")
    return SecureBoostGuestModel(
        _trees_from_arrays(arrays, str(path)),
        [str(h) for h in meta.get("hosts", [])],
        [float(b) for b in meta.get("base", [])],
        str(meta.get("task")),
        {str(k): [float(x) for x in v] for k, v in dict(meta.get("history") or {}).items()},
    )


# -- guest ------------------------------------------------------------------------------------------
@dataclass
class _Timing:
    encrypt_s: float = 0.0
    decrypt_s: float = 0.0
    split_s: float = 0.0
    wait_s: float = 0.0
    histogram_s: float = 0.0

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


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
    timing: _Timing
    scales: tuple[float, float] = (1.0, 1.0)

    @property
    def workers(self) -> int | None:
        return self.params.workers or None


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
    sums = hh.decompress(run.sk, enc, run.spec, entries, workers=run.workers)
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


def _unpack_mask(bits: Any, rows: int, *, peer: str, tag: str) -> npt.NDArray[np.bool_]:
    raw = codec.expect_type(bits, bytes, peer=peer, tag=tag)
    if len(raw) != (rows + 7) // 8:
        raise DecodeError(f"{tag} from {peer!r}: {len(raw)} bytes for {rows} rows", peer=peer, tag=tag)
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=rows).astype(bool)


def _guest_level(
    run: _GuestRun, link: Link, tree: _Tree, level: list[int], rows_of: dict[int, I64], gh: tuple[I64, I64]
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
            masks[nd] = _unpack_mask(item[1], len(rows_of[nd]), peer=host, tag="partition")
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


def _grow_tree(run: _GuestRun, link: Link, g: F64, h: F64, cls: int) -> tuple[_Tree, I64]:
    """Grow one tree on (g, h) (zero outside the sample); return it and every row's leaf."""
    gs = float(np.max(np.abs(g))) or 1.0
    hs = float(np.max(np.abs(h))) or 1.0
    run.scales = (gs, hs)
    packed, g_int, h_int = hh.encode_rows(g / gs, h / hs, run.spec)
    started = time.perf_counter()
    wire = he.encrypt(run.pk, packed, workers=run.workers).to_wire()
    run.timing.encrypt_s += time.perf_counter() - started
    for host in run.hosts:
        link.send(host, "tree", {"gh": wire})
    tree = _Tree(cls=cls)
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
    trees: list[_Tree]
    deltas: list[F64]
    history: dict[str, list[float]]


def _id_rank(ids: np.ndarray) -> I64:
    """Each row's position in id order: sampling and checkpoints follow ids, not the PSI row order."""
    order = np.argsort(np.asarray([str(i) for i in ids], dtype=object), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _guest_checkpoint(path: Path, fingerprint: str, state: _GuestState, rank: I64) -> None:
    arrays = _trees_to_arrays(state.trees)
    by_id = np.zeros((len(state.deltas), len(rank)))
    if state.deltas:
        by_id[:, rank] = np.stack(state.deltas)
    arrays["deltas"] = by_id
    meta = {"fingerprint": fingerprint, "trees": len(state.trees), "history": state.history}
    save_model(path, _CHECKPOINT_STEP, meta, arrays)


def _guest_resume(path: Path, fingerprint: str, rank: I64) -> _GuestState | None:
    if not path.is_file():
        return None
    meta, arrays = load_model(path, _CHECKPOINT_STEP)
    if meta.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{path}: the checkpoint belongs to a different secureboost run (parameters or data changed)"
        )
    trees = _trees_from_arrays(arrays, str(path))
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
    run = _GuestRun(ctx.link, hosts, params, pk, sk, spec, bins, edges, _Timing())
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
    ctx.state["model"] = model
    path = model.save(ctx.workdir / MODEL_FILE)
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


# -- host -------------------------------------------------------------------------------------------
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
    save_model(path, _CHECKPOINT_STEP, {"fingerprint": fingerprint, "trees": trees}, arrays)


def _host_resume(path: Path, fingerprint: str) -> tuple[int, _HostState] | None:
    if not path.is_file():
        return None
    meta, arrays = load_model(path, _CHECKPOINT_STEP)
    if meta.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{path}: the checkpoint belongs to a different secureboost run (parameters or data changed)"
        )
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
    timing: _Timing


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
    enc = hh.compress(hists, run.spec, run.pk, workers=run.params.workers or None)
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
        mask = _unpack_mask(item[3], len(rows_of[nd]), peer=run.guest, tag="children")
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


def _run_host(ctx: StepContext, params: SecureBoostParams, guest: str) -> dict[str, Any]:
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
    run = _HostRun(link, guest, params, pk, spec, bins, edges, st, _Timing())
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
    ctx.state["model"] = model
    path = model.save(ctx.workdir / MODEL_FILE)
    elapsed = time.perf_counter() - started
    return {
        "splits": len(st.feature),
        "model_path": str(path),
        "seconds": round(elapsed, 4),
        "timing": run.timing.rounded(),
    }


# -- the step ---------------------------------------------------------------------------------------
def run_secureboost(ctx: StepContext, params: SecureBoostParams) -> dict[str, Any]:
    """Run this party's role of SecureBoost training (guest: labels; host: features)."""
    if ctx.role not in ("guest", "host"):
        ctx.state["model"] = _Bystander()  # e.g. an arbiter: it takes no part in evaluate / predict
        return {}
    guest = _guest_party(ctx)
    hosts = [p for p in ctx.data_parties if ctx.roles[p] == "host"]
    if not hosts:
        raise ConfigError("secureboost needs at least one party with role host and data")
    if ctx.data is None:
        raise ConfigError(f"secureboost: party {ctx.party!r} ({ctx.role}) has no data")
    if ctx.role == "guest":
        return _run_guest(ctx, params, hosts)
    return _run_host(ctx, params, guest)


def baseline_secureboost(params: SecureBoostParams, datasets: Mapping[str, BaselineData]) -> dict[str, float]:
    """XGBoost (hist) with the same parameters on the pooled data; the metric `evaluate` reports."""
    import xgboost as xgb

    from sharelearn.algorithms.evaluation import metrics_for

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
