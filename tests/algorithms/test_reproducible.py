"""A fixed seed gives bit-identical models and predictions across reruns of every step.

Each test runs the same job twice (same data, same seed, fresh keys, masks and blinding each run)
and compares the bytes of every party's model package and of the files the steps wrote
(`intersection_ids.csv`, `predictions.csv`). Documented volatile fields are left out of the
comparison, and only they:

- `identity.model_id`: derived from the run id, which is fresh per run (a model id names one
  training run; two runs are two models even when their parameters are equal);
- `created_at`: the wall-clock time of training;
- the package digest, which covers both.

What stays fresh by design (the security of the protocols needs it) and does not reach the model:
Paillier/OU keys and encryption randomness, one-time gradient masks, PSI blinding scalars and
shuffles, secret-sharing randomness, secure-aggregation masks. Two steps keep secret per-run
randomness *inside* a party's part, and the tests say which field and why:

- secureboost's host part keeps the secret key of its per-node feature shuffle (`arrays["key"]`),
  fresh per run so that the guest cannot link shuffles across runs; every threshold, split and
  leaf is bit-identical;
- ss_lr: SecureML's local truncation of a product of shares is off by one unit in the last place
  (2^-frac_bits) with a probability set by the shares' randomness, which must be fresh; the
  revealed weights and scores agree to within that rounding, and are compared with a tolerance
  derived from it (epochs x batches x 2^-frac_bits), not bit for bit.
- fedavg with DP noise (`dp: {noise_multiplier: > 0}`) draws its noise from the OS CSPRNG on purpose
  (tests/algorithms/test_fedavg_dp.py); without DP, secure aggregation's masks cancel exactly and
  the model is bit-identical, which is what is tested here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from sharelearn.algorithms.evaluation import PredictParams
from sharelearn.algorithms.horizontal.fedavg import FedAvgParams
from sharelearn.algorithms.mpc.ss_lr import SSLRParams
from sharelearn.algorithms.package import ModelPackage, load_package
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams
from sharelearn.algorithms.vertical.secureboost_params import SecureBoostParams
from sharelearn.core import codec
from sharelearn.operators.psi import PsiParams
from sharelearn.runtime.data import PartyData
from sharelearn.testing.steps import dataset, run_steps

pytestmark = pytest.mark.timeout(300)

SEED = 20261202


def _vertical(extra: dict[str, str], *, scaled: bool = False) -> dict[str, tuple[str, PartyData | None]]:
    """Breast cancer split by columns; the shop holds 470 of the bank's 500 people, in another order."""
    x, y = load_breast_cancer(return_X_y=True)
    if scaled:
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    rng = np.random.default_rng(0)
    ids = np.asarray([f"p{i:04d}" for i in range(len(y))], dtype=object)
    bank_rows = rng.permutation(len(y))[:500]
    shop_rows = np.concatenate([bank_rows[:470], rng.permutation(np.setdiff1d(np.arange(len(y)), bank_rows))])
    shop_rows = shop_rows[rng.permutation(shop_rows.size)]
    parties: dict[str, tuple[str, PartyData | None]] = {
        "bank": ("guest", dataset(list(ids[bank_rows]), x[bank_rows, :10], y[bank_rows], "bank.csv")),
        "shop": ("host", dataset(list(ids[shop_rows]), x[shop_rows, 10:], None, "shop.csv")),
    }
    return parties | {name: (role, None) for name, role in extra.items()}


def _horizontal() -> dict[str, tuple[str, PartyData | None]]:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(1).permutation(len(y))
    parts = np.array_split(order, 3)
    return {
        name: (role, dataset([f"{name}{i}" for i in rows], x[rows], y[rows], f"{name}.csv"))
        for (name, role), rows in zip(
            (("agg", "server"), ("c1", "client"), ("c2", "client")), parts, strict=True
        )
    }


def _stable(package: ModelPackage, drop: tuple[str, ...] = ()) -> bytes:
    """The package's bytes without its documented volatile fields (and the named secret arrays)."""
    same = replace(
        package,
        identity=replace(package.identity, model_id=""),
        created_at=0.0,
        arrays={k: v for k, v in package.arrays.items() if k not in drop},
    )
    return codec.encode(same.to_wire())


def _outputs(folder: Path, step: str, drop: dict[str, tuple[str, ...]]) -> dict[str, bytes]:
    """Every party's model bytes (volatile fields left out) and the files the steps wrote."""
    found: dict[str, bytes] = {}
    for party_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        model = party_dir / "models" / f"{step}.model"
        if model.is_file():
            found[f"{party_dir.name}/model"] = _stable(load_package(model), drop.get(party_dir.name, ()))
        for name in ("intersection_ids.csv", "predictions.csv"):
            if (party_dir / name).is_file():
                found[f"{party_dir.name}/{name}"] = (party_dir / name).read_bytes()
    return found


def _twice(parties: dict[str, Any], steps: list[tuple[str, Any]], tmp_path: Path) -> tuple[Any, Any]:
    # the same folder name: a package records its job's name (the folder's name under run_steps)
    first = run_steps(parties, steps, tmp_path / "first" / "job")
    again = run_steps(parties, steps, tmp_path / "again" / "job")
    return first, again


def _assert_same(
    tmp_path: Path, step: str, drop: dict[str, tuple[str, ...]] | None = None
) -> dict[str, bytes]:
    first = _outputs(tmp_path / "first" / "job", step, drop or {})
    again = _outputs(tmp_path / "again" / "job", step, drop or {})
    assert first.keys() == again.keys()
    assert [k for k in first if first[k] != again[k]] == []
    return first


def test_psi_rerun_gives_the_same_common_order_and_a_new_seed_another(tmp_path: Path) -> None:
    parties = _vertical({})

    _twice(parties, [("psi", PsiParams(seed=SEED))], tmp_path)
    other = run_steps(parties, [("psi", PsiParams(seed=SEED + 1))], tmp_path / "other")

    files = _assert_same(tmp_path, "psi")
    assert files["bank/intersection_ids.csv"] == files["shop/intersection_ids.csv"]
    assert files["bank/intersection_ids.csv"].count(b"\n") == 471
    other_data = other.parties["bank"].data
    assert other_data is not None
    assert list(other_data.ids) != files["bank/intersection_ids.csv"].decode().split()[1:]


def test_hetero_lr_rerun_agrees_to_the_refresh_rounding(tmp_path: Path) -> None:
    # Not bit-identical: the host's encrypted weights are shifted back to frac_bits through the key
    # holder under a fresh mask (hetero_lr_core.serve_refresh), so each refresh rounds the last bit
    # either way. Masks derived from the job's public seed would let the key holder remove them.
    parties = _vertical({"coord": "arbiter"})
    lr = HeteroLrParams(epochs=2, key_bits=1024, seed=SEED)

    _twice(
        parties, [("psi", PsiParams(seed=SEED)), ("hetero_lr", lr), ("predict", PredictParams())], tmp_path
    )

    for party in ("bank", "shop"):
        a, b = (
            load_package(tmp_path / r / "job" / party / "models" / "hetero_lr.model")
            for r in ("first", "again")
        )
        assert a.arrays.keys() == b.arrays.keys() and a.arrays
        for key in a.arrays:
            np.testing.assert_allclose(a.arrays[key], b.arrays[key], rtol=0, atol=1e-4)
    pa, pb = (
        (tmp_path / r / "job" / "bank" / "predictions.csv").read_text().split() for r in ("first", "again")
    )
    assert [r.split(",")[0] for r in pa] == [r.split(",")[0] for r in pb] and len(pa) == 471
    scores = [np.array([float(r.split(",")[1]) for r in rows[1:]]) for rows in (pa, pb)]
    np.testing.assert_allclose(scores[0], scores[1], rtol=0, atol=1e-4)


def test_secureboost_rerun_gives_the_same_trees_and_predictions(tmp_path: Path) -> None:
    parties = _vertical({})
    sb = SecureBoostParams(num_trees=2, max_depth=2, key_bits=1024, seed=SEED)

    _twice(
        parties, [("psi", PsiParams(seed=SEED)), ("secureboost", sb), ("predict", PredictParams())], tmp_path
    )

    # the host's shuffle key is secret per-run randomness (module docstring); all else is compared
    files = _assert_same(tmp_path, "secureboost", {"shop": ("key",)})
    assert {"bank/model", "shop/model", "bank/predictions.csv"} <= files.keys()


def test_fedavg_with_secure_aggregation_rerun_gives_the_same_model(tmp_path: Path) -> None:
    parties = _horizontal()
    params = FedAvgParams(rounds=2, secure_aggregation=True, seed=SEED)

    _twice(parties, [("fedavg", params), ("predict", PredictParams())], tmp_path)

    files = _assert_same(tmp_path, "fedavg")
    assert "agg/model" in files


def test_ss_lr_rerun_agrees_to_the_truncation_rounding(tmp_path: Path) -> None:
    parties = _vertical({"third": "dealer"}, scaled=True)
    params = SSLRParams(epochs=2, batch_size=128, seed=SEED, reveal_to=("bank",))
    steps: list[tuple[str, Any]] = [
        ("psi", PsiParams(seed=SEED)),
        ("ss_lr", params),
        ("predict", PredictParams()),
    ]

    _twice(parties, steps, tmp_path)

    a, b = (
        load_package(tmp_path / r / "job" / "bank" / "models" / "ss_lr.model") for r in ("first", "again")
    )
    assert {k: v for k, v in a.meta.items() if k != "history"} == {
        k: v for k, v in b.meta.items() if k != "history"
    }
    # one truncation error of 2^-frac_bits per product, a few products per batch, every batch
    atol = params.epochs * -(-471 // params.batch_size) * 8 * 2.0**-params.frac_bits
    np.testing.assert_allclose(a.meta["history"]["loss"], b.meta["history"]["loss"], rtol=0, atol=atol)
    np.testing.assert_allclose(a.arrays["weights"], b.arrays["weights"], rtol=0, atol=atol)
    # the weight shares themselves are fresh randomness; what they reconstruct agrees
    for run in ("first", "again"):
        w_sh = [
            load_package(tmp_path / run / "job" / p / "models" / "ss_lr.model").arrays["w_share"]
            for p in ("bank", "shop")
        ]
        w = (w_sh[0] + w_sh[1]).view(np.int64) * 2.0**-params.frac_bits
        np.testing.assert_allclose(w.reshape(-1), a.arrays["weights"].reshape(-1), rtol=0, atol=2 * atol)
    pa, pb = (
        (tmp_path / r / "job" / "bank" / "predictions.csv").read_text().split() for r in ("first", "again")
    )
    assert [r.split(",")[0] for r in pa] == [r.split(",")[0] for r in pb]
    scores = [np.asarray([float(r.split(",")[1]) for r in p[1:]]) for p in (pa, pb)]
    np.testing.assert_allclose(scores[0], scores[1], rtol=0, atol=atol)
