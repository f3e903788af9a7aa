"""SecureBoost's trained model: the guest's trees, each host's private lookup table, prediction.

The guest keeps its trees, with every host split as (host, opaque split id); each host keeps its
lookup table (feature, threshold) per split id. Prediction is collaborative: each host sends, for
its lookup-table entries, which rows go left; only the guest learns scores. Model files are
msgpack (`modelstore`), one per party.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.context import Dataset, StepContext
from sharelearn.algorithms.package import ModelPackage
from sharelearn.algorithms.vertical.tree_kernels import F64, I64
from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, DataError, DecodeError, ProtocolError

__all__ = [
    "MODEL_FILE",
    "Bystander",
    "FlatForest",
    "SecureBoostGuestModel",
    "SecureBoostHostModel",
    "Tree",
    "flatten_trees",
    "guest_party",
    "load_secureboost",
    "trees_from_arrays",
    "trees_to_arrays",
]

MODEL_FILE = "models/secureboost.model"  # algorithms.package.model_path(workdir, "secureboost")


# -- trees ------------------------------------------------------------------------------------------
@dataclass
class Tree:
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


def trees_to_arrays(trees: Sequence[Tree]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "tree_sizes": np.asarray([len(t.left) for t in trees], dtype=np.int64),
        "tree_class": np.asarray([t.cls for t in trees], dtype=np.int64),
    }
    for name in (*_INT_FIELDS, "threshold", "value"):
        dtype = np.int64 if name in _INT_FIELDS else np.float64
        out[name] = np.asarray([v for t in trees for v in getattr(t, name)], dtype=dtype)
    return out


def trees_from_arrays(arrays: Mapping[str, np.ndarray], source: str) -> list[Tree]:
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
        trees.append(Tree(cls=int(cls), **part))
        start += size
    return trees


def _decider(tree: Tree, x: F64, masks: Sequence[npt.NDArray[np.bool_]]) -> Any:
    """goes_left(node, positions) for prediction: the guest's own splits, else the hosts' masks."""
    feat, thr = np.asarray(tree.feature), np.asarray(tree.threshold)
    owner, sid = np.asarray(tree.owner), np.asarray(tree.split_id)

    def goes_left(nd: int, at: I64) -> Any:
        if owner[nd] < 0:
            return x[at, feat[nd]] <= thr[nd]
        return masks[owner[nd]][sid[nd], at]

    return goes_left


def _route(tree: Tree, rows: int, goes_left: Any) -> I64:
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


# -- the forest as flat arrays (online scoring) -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class FlatForest:
    """Every tree's nodes in one set of arrays, so that a batch walks all trees at once with numpy.

    Node k of tree t is global node `starts[t] + k`; a leaf's children are itself, so walking `depth`
    steps from the roots lands every (row, tree) on its leaf. `owner` -1: a guest split on guest
    column `feature`; owner h: a split of hosts[h], decided by bit `split_id` of that host's lookup
    table (the only thing a host sends). `value` is a leaf's contribution to class `tree_class`.
    """

    roots: I64
    left: I64
    right: I64
    owner: I64
    feature: I64
    split_id: I64
    threshold: F64
    value: F64
    tree_class: I64
    depth: int
    classes: int

    def margins(self, x: F64, base: F64, decisions: Sequence[npt.NDArray[np.bool_]]) -> F64:
        """Raw scores (n, classes): base plus every tree's leaf; decisions[h] is (n, entries of h)."""
        n = x.shape[0]
        col = self._decision_columns([d.shape[1] for d in decisions])
        decided = np.concatenate([*decisions, np.zeros((n, 1), dtype=bool)], axis=1)
        xs = x if x.shape[1] else np.zeros((n, 1), dtype=np.float64)
        rows = np.arange(n)[:, None]
        node = np.repeat(self.roots[None, :], n, axis=0)
        for _ in range(self.depth):
            own_left = xs[rows, self.feature[node]] <= self.threshold[node]
            go_left = np.where(self.owner[node] >= 0, decided[rows, col[node]], own_left)
            node = np.where(go_left, self.left[node], self.right[node])
        leaf = self.value[node]
        if self.classes == 1:
            return np.asarray(base[None, :] + leaf.sum(axis=1, keepdims=True))
        onehot = np.zeros((self.roots.size, self.classes))
        onehot[np.arange(self.roots.size), self.tree_class] = 1.0
        return np.asarray(base[None, :] + leaf @ onehot)

    def _decision_columns(self, widths: Sequence[int]) -> I64:
        """Column of each host split in the hosts' concatenated decisions (guest nodes: a spare one)."""
        offsets = np.concatenate([[0], np.cumsum(widths, dtype=np.int64)])
        if len(widths) <= int(self.owner.max(initial=-1)):
            raise ProtocolError(f"decisions of {len(widths)} hosts for a forest that needs more")
        host = self.owner >= 0
        col = np.full(self.owner.size, offsets[-1], dtype=np.int64)
        own = self.owner[host]
        bad = self.split_id[host] >= np.asarray(widths, dtype=np.int64)[own]
        if bad.any():
            raise ProtocolError(
                f"host #{int(own[bad][0])} sent no decision for split {int(self.split_id[host][bad][0])}"
            )
        col[host] = offsets[own] + self.split_id[host]
        return col


def flatten_trees(trees: Sequence[Tree], classes: int) -> FlatForest:
    """The trees as one `FlatForest` (leaves made self-loops, guest/host fields made safe indexes)."""
    arrays = trees_to_arrays(trees)
    sizes = arrays["tree_sizes"]
    starts = np.concatenate([[0], np.cumsum(sizes)])[:-1].astype(np.int64)
    shift = np.repeat(starts, sizes)
    here = np.arange(int(sizes.sum()), dtype=np.int64)
    inner = arrays["left"] >= 0
    size = np.repeat(sizes, sizes)
    for side in ("left", "right"):
        if ((arrays[side][inner] < 0) | (arrays[side][inner] >= size[inner])).any():
            raise DataError(f"secureboost trees: a {side} child outside its tree")
    left = np.where(inner, arrays["left"] + shift, here)
    right = np.where(inner, arrays["right"] + shift, here)
    owner = np.where(inner, arrays["owner"], -1)
    guest = inner & (owner < 0)
    return FlatForest(
        roots=starts,
        left=left,
        right=right,
        owner=owner,
        feature=np.where(guest, arrays["feature"], 0),
        split_id=np.where(owner >= 0, arrays["split_id"], 0),
        threshold=np.where(guest, arrays["threshold"], np.inf),
        value=arrays["value"],
        tree_class=arrays["tree_class"],
        depth=_forest_depth(left, right, starts),
        classes=max(1, classes),
    )


def _forest_depth(left: I64, right: I64, roots: I64) -> int:
    """The most splits on any root-to-leaf path; DataError for a cycle (a corrupt package)."""
    depth, frontier = 0, roots
    while (frontier := frontier[left[frontier] != frontier]).size:
        depth += 1
        if depth > left.size:
            raise DataError("secureboost trees: a node is its own descendant")
        frontier = np.concatenate([left[frontier], right[frontier]])
    return depth


# -- the models -------------------------------------------------------------------------------------
def guest_party(ctx: StepContext) -> str:
    guests = [p for p, r in ctx.roles.items() if r == "guest"]
    if len(guests) != 1:
        raise ConfigError(f"secureboost needs exactly one party with role guest, the job has {guests}")
    return guests[0]


@dataclass
class SecureBoostGuestModel:
    """The guest's part: trees whose host splits are (host, opaque split id); scores stay here."""

    trees: list[Tree]
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

    @property
    def aligned_rows(self) -> bool:
        return True

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "role": "guest",
            "hosts": self.hosts,
            "base": self.base,
            "task": self.task,
            "history": self.history,
        }
        return meta, trees_to_arrays(self.trees)


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
        ctx.link.scope("secureboost", "predict").send(guest_party(ctx), "goes_left", bits)
        return None

    @property
    def aligned_rows(self) -> bool:
        return True

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"role": "host", "task": self.task}, {"feature": self.feature, "threshold": self.threshold}


@dataclass
class Bystander:
    """The part of a party with no role in SecureBoost: it predicts nothing and holds no parameters."""

    task: str = "binary"
    history: dict[str, list[float]] = field(default_factory=dict)
    step: str = "secureboost"

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        return None

    @property
    def aligned_rows(self) -> bool:
        return True

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"role": "bystander", "task": self.task}, {}


def _link_scores(task: str, margin: F64) -> np.ndarray:
    if task == "binary":
        return np.asarray(1.0 / (1.0 + np.exp(-margin[:, 0])))
    if task == "regression":
        return margin[:, 0]
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def load_secureboost(package: ModelPackage) -> SecureBoostGuestModel | SecureBoostHostModel | Bystander:
    """Rebuild one party's part from its package (guest trees, a host's lookup table, or nothing)."""
    meta, arrays = package.meta, package.arrays
    path = f"model {package.identity.model_id} ({package.identity.party})"
    role = meta.get("role")
    if role == "bystander":
        return Bystander(str(meta.get("task", "binary")))
    if role == "host":
        try:
            return SecureBoostHostModel(
                arrays["feature"].astype(np.int64), arrays["threshold"].astype(np.float64), str(meta["task"])
            )
        except KeyError as exc:
            raise DataError(f"{path}: host part lacks {exc}") from None
    if role != "guest":
        raise DataError(f"{path}: unknown secureboost role {role!r}")
    return SecureBoostGuestModel(
        trees_from_arrays(arrays, path),
        [str(h) for h in meta.get("hosts", [])],
        [float(b) for b in meta.get("base", [])],
        str(meta.get("task")),
        {str(k): [float(x) for x in v] for k, v in dict(meta.get("history") or {}).items()},
    )
