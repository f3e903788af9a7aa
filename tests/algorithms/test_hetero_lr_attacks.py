"""Attacks on hetero_lr: the host solving for the guest's labels, and parties abusing the arbiter.

The host adversary records everything it learns in the clear while training: every value a key
holder decrypts for it (`MaskedDecryption.finish`, the only way plaintext derived from another
party's ciphertexts reaches it) and every loss it is told. With a batch of m rows and k >= m host
features, a gradient g = X_b^T d / 4m gives the residual d = 4m (X_b^T)^+ g exactly, and
d = z + 2 - 4y has the sign of 1 - 2y; the attack votes over the epochs (every row is in one
batch per epoch) and also uses the short last batch. It must do no better than guessing the
majority class (+ 5 points).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams
from sharelearn.operators import he_arith
from sharelearn.operators.psi import PsiParams
from sharelearn.testing.steps import dataset, run_steps

pytestmark = pytest.mark.timeout(600)


def _split() -> tuple[Any, Any]:
    """breast_cancer split by columns: guest 10 features + label, host 20 features, 200 rows."""
    data = load_breast_cancer()
    rows = np.random.default_rng(0).permutation(len(data.target))[:200]
    x = (data.data[rows] - data.data[rows].mean(0)) / data.data[rows].std(0)
    y = data.target[rows].astype(np.float64)
    ids = [f"p{i}" for i in range(len(rows))]
    return dataset(ids, x[:, :10], y), dataset(ids, x[:, 10:])


def _host_view(monkeypatch: pytest.MonkeyPatch, host: str) -> list[tuple[str, np.ndarray]]:
    """Record (tag, plaintext) of every masked decryption the host gets back."""
    seen: list[tuple[str, np.ndarray]] = []
    finish = he_arith.MaskedDecryption.finish

    def spy(self: he_arith.MaskedDecryption) -> np.ndarray:
        out = finish(self)
        if self.link.me == host:
            prefix = getattr(self.link, "_prefix", "")
            seen.append((f"{prefix}/{self.tag}", np.asarray(out, dtype=np.float64)))
        return out

    monkeypatch.setattr(he_arith.MaskedDecryption, "finish", spy)
    return seen


def _attack(
    seen: list[tuple[str, np.ndarray]], x_h: np.ndarray, params: HeteroLrParams, n: int
) -> np.ndarray:
    """Guess labels from the gradients the host saw; rows without a solvable batch get the majority vote."""
    from sharelearn.algorithms.vertical.hetero_lr import batches

    votes: dict[int, list[float]] = defaultdict(list)
    per_batch = [(tag, v) for tag, v in seen if "/batch/" in tag and v.shape == (x_h.shape[1],)]
    for tag, g in per_batch:
        found = re.search(r"epoch/(\d+)/batch/(\d+)/", tag)
        assert found is not None, tag
        epoch, b = int(found.group(1)), int(found.group(2))
        rows = batches(n, params, params.seed or 0, epoch)[b]
        m = len(rows)
        # the sign of the least-squares residual does not depend on the gradient's positive scale
        d = np.linalg.lstsq(x_h[rows].T, g * 4 * m, rcond=None)[0]
        for r, v in zip(rows.tolist(), d.tolist(), strict=True):
            votes[r].append(v)
    guess = np.ones(n)  # the majority-class guess where nothing was learned
    for r, vs in votes.items():
        guess[r] = float(vs[0] < 0)  # the earliest equation: at epoch 0 all scores are 0, d = 2 - 4y
    return guess


@pytest.mark.parametrize("mode", ["arbiter", "two_party"])
def test_host_cannot_solve_for_the_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    guest, host = _split()
    parties = {"bank": ("guest", guest), "shop": ("host", host)}
    if mode == "arbiter":
        parties["coord"] = ("arbiter", None)
    # 16 rows < 20 host features, 200 = 12 * 16 + 8: a short last batch; 3 epochs of equations
    params = HeteroLrParams(
        epochs=3, batch_size=16, key_bits=1024, seed=5, tol=0.0, mode=mode, he_scheme="ou", shuffle=False
    )
    seen = _host_view(monkeypatch, "shop")

    run = run_steps(parties, [("psi", PsiParams()), ("hetero_lr", params)], tmp_path)

    host_rows, guest_rows = run.parties["shop"].data, run.parties["bank"].data
    assert host_rows is not None and guest_rows is not None
    x_h = np.asarray(host_rows.x)  # the aligned rows, in the order training used
    y = np.asarray(guest_rows.y)
    guess = _attack(seen, x_h, params, len(y))
    accuracy = float(np.mean(guess == y))
    majority = max(float(y.mean()), 1.0 - float(y.mean()))
    assert accuracy <= majority + 0.05, f"host recovered {accuracy:.3f} of labels (majority {majority:.3f})"
    # and no decryption reached the host during training (only the final weights, at the end)
    assert not [tag for tag, _ in seen if "/batch/" in tag], "the host decrypted per-batch values"
