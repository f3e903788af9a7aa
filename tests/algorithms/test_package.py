"""Model packages: identity, schema and digest checked on load; predict never pairs rows by position.

Data: scikit-learn's bundled breast-cancer set, split by hand into a bank (label + 10 columns) and a
shop (20 columns) whose files list the people in different orders and only partly overlap.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score

from sharelearn.algorithms.evaluation import EvaluateParams, PredictParams
from sharelearn.algorithms.package import load_package, model_path, save_package
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams
from sharelearn.core.errors import DataError, PartyFailed
from sharelearn.operators.psi import PsiParams
from sharelearn.runtime.data import PartyData
from sharelearn.testing.steps import dataset, run_steps

PARAMS = HeteroLrParams(epochs=4, batch_size=0, key_bits=1024, learning_rate=0.5, seed=1, mode="two_party")


def _split() -> tuple[PartyData, PartyData]:
    bunch = load_breast_cancer()
    x = (bunch.data - bunch.data.mean(axis=0)) / bunch.data.std(axis=0)
    ids = np.array([f"p{i:04d}" for i in range(len(x))])
    rng = np.random.default_rng(5)
    bank_rows, shop_rows = rng.permutation(len(x))[:520], rng.permutation(len(x))[:540]  # partial overlap
    bank = dataset(ids[bank_rows], x[bank_rows, :10], bunch.target[bank_rows].astype(float), name="bank.csv")
    shop = dataset(ids[shop_rows], x[shop_rows, 10:], name="shop.csv")
    shop = replace(shop, feature_names=tuple(f"s{k}" for k in range(20)))
    return bank, shop


def _train(tmp_path: Path) -> tuple[dict[str, tuple[str, PartyData]], str]:
    bank, shop = _split()
    parties = {"bank": ("guest", bank), "shop": ("host", shop)}
    run_steps(parties, [("psi", PsiParams()), ("hetero_lr", PARAMS)], tmp_path / "train")
    return parties, str(tmp_path / "train" / "{party}" / "models" / "hetero_lr.model")


def _reference_auc(tmp_path: Path, parties: dict[str, tuple[str, PartyData]]) -> float:
    run = run_steps(
        parties, [("psi", PsiParams()), ("hetero_lr", PARAMS), ("evaluate", EvaluateParams())], tmp_path
    )
    return float(run.parties["bank"].outputs["evaluate"]["auc"])


def test_a_package_records_identity_schema_and_classes(tmp_path: Path) -> None:
    _parties, template = _train(tmp_path)

    bank = load_package(Path(template.format(party="bank")), party="bank", step="hetero_lr")
    shop = load_package(Path(template.format(party="shop")), party="shop")

    assert bank.identity.model_id == shop.identity.model_id and len(bank.identity.model_id) == 32
    assert (bank.identity.role, shop.identity.role, bank.identity.version) == ("guest", "host", 1)
    assert bank.identity.parties == (("bank", "guest"), ("shop", "host"))
    assert shop.schema is not None and shop.schema.names == tuple(f"s{k}" for k in range(20))
    assert bank.label_classes == (0.0, 1.0) and shop.label_classes is None
    assert len(bank.data_fingerprint) == 64 and bank.data_fingerprint != shop.data_fingerprint


def test_a_changed_or_foreign_package_is_refused(tmp_path: Path) -> None:
    _parties, template = _train(tmp_path)
    path = Path(template.format(party="shop"))
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    tampered = tmp_path / "tampered.model"
    tampered.write_bytes(bytes(raw))

    with pytest.raises(DataError, match="digest mismatch|malformed|not a sharelearn"):
        load_package(tampered)
    with pytest.raises(DataError, match="party 'shop''s part of the model, not 'bank''s"):
        load_package(path, party="bank")
    with pytest.raises(DataError, match="holds a 'hetero_lr' model, expected 'secureboost'"):
        load_package(path, step="secureboost")


def test_predict_without_psi_aligns_the_rows_itself(tmp_path: Path) -> None:
    parties, template = _train(tmp_path)
    want = _reference_auc(tmp_path / "ref", parties)

    later = run_steps(
        parties,
        [("predict", PredictParams(model=template)), ("evaluate", EvaluateParams(plots=False))],
        tmp_path / "later",
    )

    bank = later.parties["bank"]
    assert bank.outputs["evaluate"]["auc"] == pytest.approx(want, abs=1e-9)
    lines = (tmp_path / "later" / "bank" / "predictions.csv").read_text().splitlines()[1:]
    scores = {line.split(",")[0]: float(line.split(",")[1]) for line in lines}
    truth = dict(zip(bank.data.ids, bank.data.y, strict=True))  # type: ignore[union-attr]
    assert roc_auc_score([truth[i] for i in scores], list(scores.values())) == pytest.approx(want, abs=1e-6)


def test_reordered_columns_are_matched_by_name(tmp_path: Path) -> None:
    parties, template = _train(tmp_path)
    want = _reference_auc(tmp_path / "ref", parties)
    role, shop = parties["shop"]
    order = np.random.default_rng(0).permutation(20)
    shuffled = replace(shop, x=shop.x[:, order], feature_names=tuple(shop.feature_names[k] for k in order))

    later = run_steps(
        {**parties, "shop": (role, shuffled)},
        [("predict", PredictParams(model=template)), ("evaluate", EvaluateParams(plots=False))],
        tmp_path / "later",
    )

    assert later.parties["bank"].outputs["evaluate"]["auc"] == pytest.approx(want, abs=1e-9)


def test_a_missing_or_unknown_column_is_an_error_naming_it(tmp_path: Path) -> None:
    parties, template = _train(tmp_path)
    role, shop = parties["shop"]
    renamed = replace(shop, feature_names=("income", *shop.feature_names[1:]))

    with pytest.raises(PartyFailed, match=r"party 'shop'.*missing \['s0'\], not in the model \['income'\]"):
        run_steps(
            {**parties, "shop": (role, renamed)}, [("predict", PredictParams(model=template))], tmp_path / "p"
        )


def test_parts_of_different_models_are_refused(tmp_path: Path) -> None:
    parties, _template = _train(tmp_path)
    _train(tmp_path / "second")  # the same job run again: another model id
    mixed = tmp_path / "mixed"
    (mixed / "bank" / "models").mkdir(parents=True)
    (mixed / "shop" / "models").mkdir(parents=True)
    for party, source in (("bank", tmp_path), ("shop", tmp_path / "second")):
        package = load_package(source / "train" / party / "models" / "hetero_lr.model")
        save_package(model_path(mixed / party, "hetero_lr"), package)

    with pytest.raises(PartyFailed, match="party 'shop' loaded a part of another model or version"):
        run_steps(
            parties,
            [("predict", PredictParams(model=str(mixed / "{party}" / "models" / "hetero_lr.model")))],
            tmp_path / "p",
        )
    with pytest.raises(PartyFailed, match=r"party 'shop''s part of the model, not 'bank''s"):
        swapped = str(
            tmp_path / "train" / "shop" / "models" / "hetero_lr.model"
        )  # every party gets the shop's
        run_steps(parties, [("predict", PredictParams(model=swapped))], tmp_path / "q")
