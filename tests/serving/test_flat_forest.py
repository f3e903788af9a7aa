"""The flat-array SecureBoost walk (online scoring) equals the per-tree walk of batch predict.

Data: random trees (guest splits and splits of two hosts, several classes) and random rows, built
here; the per-tree walk `SecureBoostGuestModel.margins` is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from sharelearn.algorithms.vertical.secureboost_model import (
    SecureBoostGuestModel,
    Tree,
    flatten_trees,
)
from sharelearn.core.errors import DataError, ProtocolError

ENTRIES = (7, 12)  # lookup-table entries of host 0 and host 1


def _grow(rng: np.random.Generator, tree: Tree, depth: int) -> int:
    nd = tree.add()
    tree.value[nd] = float(rng.normal())
    if depth == 0 or rng.random() < 0.2:
        return nd
    owner = int(rng.integers(-1, len(ENTRIES)))
    tree.owner[nd] = owner
    if owner < 0:
        tree.feature[nd], tree.threshold[nd] = int(rng.integers(0, 4)), float(rng.normal())
    else:
        tree.split_id[nd] = int(rng.integers(0, ENTRIES[owner]))
    left = _grow(rng, tree, depth - 1)
    right = _grow(rng, tree, depth - 1)
    tree.left[nd], tree.right[nd] = left, right
    return nd


def _forest(seed: int, classes: int) -> SecureBoostGuestModel:
    rng = np.random.default_rng(seed)
    trees = []
    for t in range(30):
        tree = Tree(cls=t % classes)
        _grow(rng, tree, 5)
        trees.append(tree)
    return SecureBoostGuestModel(trees, ["h0", "h1"], rng.normal(size=classes).tolist(), "multiclass")


@pytest.mark.parametrize("classes", [1, 3])
def test_the_flat_walk_equals_the_tree_walk(classes: int) -> None:
    model = _forest(classes, classes)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4))
    x[::17, 2] = np.nan  # a missing guest value goes right, in both walks
    decisions = [rng.random((300, e)) < 0.5 for e in ENTRIES]
    reference = model.margins(x, [d.T for d in decisions])
    forest = flatten_trees(model.trees, classes)
    got = forest.margins(x, np.asarray(model.base), decisions)
    assert got.shape == (300, classes)
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12)
    assert forest.depth <= 5


def test_a_host_that_sends_too_few_decisions_is_named() -> None:
    model = _forest(3, 1)
    forest = flatten_trees(model.trees, 1)
    short = [np.zeros((2, ENTRIES[0]), bool), np.zeros((2, 1), bool)]
    with pytest.raises(ProtocolError, match="host #1 sent no decision"):
        forest.margins(np.zeros((2, 4)), np.zeros(1), short)


def test_a_child_outside_its_tree_is_a_data_error() -> None:
    tree = Tree()
    root = tree.add()
    tree.add()
    tree.left[root], tree.right[root] = 1, 5
    with pytest.raises(DataError, match="right child outside its tree"):
        flatten_trees([tree], 1)
