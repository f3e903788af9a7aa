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

from sharelearn.algorithms.context import StepContext
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams
from sharelearn.algorithms.vertical.hetero_lr_arbiter import run_arbiter
from sharelearn.algorithms.vertical.hetero_lr_core import (
    Plan,
    Tags,
    serve_decrypt,
    serve_refresh,
    setup_roles,
)
from sharelearn.core.errors import PartyFailed, ProtocolError
from sharelearn.core.link import Link
from sharelearn.crypto import he
from sharelearn.operators import he_arith
from sharelearn.operators.he_arith import recv_public_key
from sharelearn.operators.psi import PsiParams
from sharelearn.testing.roles import run_roles
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


# -- the arbiter decrypts only what the protocol expects -----------------------------------------

_K_GUEST, _ROWS = 4, 8  # the evil guest claims 3 features + intercept and 8 rows (one batch)


def _arbiter_role(tmp_path: Path, params: HeteroLrParams) -> Any:
    roles = {"bank": "guest", "shop": "host", "coord": "arbiter"}

    def body(link: Link) -> Any:
        ctx = StepContext(link, "coord", roles, None, ["bank", "shop"], tmp_path, aligned=True)
        return run_arbiter(ctx, params, setup_roles(ctx, params))

    return body


def _honest_start(link: Link, peer_rows: int, features: int) -> he.HEPublicKey:
    pk = recv_public_key(link, "coord", Tags.PK, scheme="ou", min_bits=1024)
    link.send("coord", Tags.PLAN, Plan(peer_rows, features).to_wire())
    return pk


def _host(link: Link) -> None:
    _honest_start(link, _ROWS, 3)
    link.recv("bank", Tags.SEED)  # then waits; the arbiter must fail first


@pytest.mark.parametrize(
    ("what", "shape", "frac_bits"),
    [
        ("another party's scores [[u_h]] (one per row)", (_ROWS,), 40 + 16),
        ("a gradient at another precision", (_K_GUEST,), 0),
        ("a gradient at a higher precision", (_K_GUEST,), 24 + 2 * 16 + 8),
    ],
)
def test_arbiter_refuses_a_request_it_does_not_expect(
    tmp_path: Path, what: str, shape: tuple[int, ...], frac_bits: int
) -> None:
    params = HeteroLrParams(epochs=1, batch_size=0, key_bits=1024, he_scheme="ou", seed=1)

    def guest(link: Link) -> None:
        pk = _honest_start(link, _ROWS, _K_GUEST)
        link.send("shop", Tags.SEED, 1)
        bl = link.scope("epoch", 0).scope("batch", 0)
        forged = he.encrypt(pk, np.arange(int(np.prod(shape)), dtype=np.float64), frac_bits=frac_bits)
        bl.send("coord", Tags.GRAD, forged.to_wire())
        bl.recv("coord", f"{Tags.GRAD}.plain")

    with pytest.raises(PartyFailed) as caught:
        run_roles({"coord": _arbiter_role(tmp_path, params), "bank": guest, "shop": _host}, timeout=20)

    assert caught.value.party == "coord", what
    assert "refused bank's 'grad' decryption request" in str(caught.value), str(caught.value)
    assert isinstance(caught.value.__cause__, ProtocolError)


@pytest.mark.parametrize("frac_bits", [24, 24 + 72 + 1])
def test_key_holder_refuses_a_refresh_at_another_precision(frac_bits: int) -> None:
    pk, sk = he.keygen("ou", 1024)

    def keyholder(link: Link) -> None:
        serve_refresh(link, "shop", sk, size=3, frac_bits=24)

    def host(link: Link) -> None:
        # the host's weights unshifted: decrypted and returned they would be readable after >> 72
        link.send("coord", Tags.REFRESH, he.encrypt(pk, np.ones(3), frac_bits=frac_bits).to_wire())
        link.recv("coord", f"{Tags.REFRESH}.enc")

    with pytest.raises(PartyFailed, match=r"refused shop's 'refresh' decryption request.*frac_bits 96"):
        run_roles({"coord": keyholder, "shop": host}, timeout=20)


def test_key_holder_refuses_a_wrong_shape_of_final_weights() -> None:
    pk, sk = he.keygen("ou", 1024)

    def keyholder(link: Link) -> None:
        serve_decrypt(link, "shop", Tags.FINAL, sk, shape=(3,), frac_bits=24)

    def host(link: Link) -> None:
        # a host asking for 16 values at the end (e.g. a batch's [[d]]) instead of its 3 weights
        link.send("coord", Tags.FINAL, he.encrypt(pk, np.ones(16), frac_bits=24).to_wire())
        link.recv("coord", f"{Tags.FINAL}.plain")

    with pytest.raises(
        PartyFailed, match=r"refused shop's 'final' decryption request: expected shape \(3,\)"
    ):
        run_roles({"coord": keyholder, "shop": host}, timeout=20)
