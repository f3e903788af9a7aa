"""Replaying fitted preprocessing (algorithms.preprocess) and the missing-value guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharelearn.algorithms.context import StepContext
from sharelearn.algorithms.preprocess import Table, apply_preprocessing, require_complete
from sharelearn.core.errors import DataError
from sharelearn.core.memlink import MemNetwork

STEPS = [
    {"kind": "categories", "columns": {"job": ["baker", "clerk"]}},
    {"kind": "impute", "columns": ["a"], "values": [2.0]},
    {"kind": "scale", "columns": ["a"], "center": [1.0], "scale": [2.0]},
    {"kind": "encode", "method": "onehot", "column": "job", "categories": ["baker", "clerk"]},
]


def table(x: list[list[float]], categories: tuple[str, ...]) -> Table:
    ids = np.asarray([str(i) for i in range(len(x))], dtype=object)
    return Table(
        ids, np.asarray(x, dtype=np.float64), None, ("a", "job"), Path("t.csv"), None, {"job": categories}
    )


def test_replay_recodes_imputes_scales_and_one_hot_encodes() -> None:
    # this file's categories are sorted differently: code 0 is "clerk" here
    data = table([[3.0, 0.0], [np.nan, 1.0], [1.0, np.nan]], ("clerk", "baker"))

    out = apply_preprocessing(STEPS, data)

    assert out.feature_names == ("a", "job=baker", "job=clerk")
    np.testing.assert_allclose(out.x, [[1.0, 0.0, 1.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert np.isnan(data.x[1, 0])  # the input is left unchanged


def test_dataframe_with_text_categories_matches_the_table_path() -> None:
    frame = pd.DataFrame({"a": [3.0, None], "job": ["clerk", "baker"]})

    out = apply_preprocessing(STEPS, frame)

    assert list(out.columns) == ["a", "job=baker", "job=clerk"]
    np.testing.assert_allclose(out.to_numpy(), [[1.0, 0.0, 1.0], [0.5, 1.0, 0.0]])


def test_unseen_category_is_a_data_error_naming_column_and_value() -> None:
    data = table([[1.0, 0.0]], ("teacher",))

    with pytest.raises(DataError, match="column 'job' has category 'teacher', unseen in training"):
        apply_preprocessing(STEPS, data)


def test_step_without_missing_support_asks_for_impute(tmp_path: Path) -> None:
    link = MemNetwork(["g"]).link("g")
    ctx = StepContext(link, "g", {"g": "guest"}, table([[np.nan, 0.0]], ("a",)), ["g"], tmp_path)

    with pytest.raises(DataError) as info:
        require_complete(ctx, "hetero_lr")

    assert "step 'hetero_lr' cannot handle missing values" in str(info.value)
    assert "'a' (1 missing)" in str(info.value) and "impute" in str(info.value)


def test_preprocessing_survives_the_package_file(tmp_path: Path) -> None:
    from sharelearn.algorithms.package import ModelIdentity, ModelPackage, load_package, save_package

    identity = ModelIdentity("m", 1, "hetero_lr", "job", "g", "guest", (("g", "guest"),))
    package = ModelPackage(identity, "binary", None, None, "", {}, {}, tuple(STEPS))

    loaded = load_package(save_package(tmp_path / "m.model", package))

    out = apply_preprocessing(loaded, table([[np.nan, 1.0]], ("baker", "clerk")))
    np.testing.assert_allclose(out.x, [[0.5, 0.0, 1.0]])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_impute_step_fills_each_partys_own_columns(tmp_path: Path, strategy: str) -> None:
    from sklearn.impute import SimpleImputer

    from sharelearn.algorithms.impute import ImputeParams
    from sharelearn.testing.steps import dataset, run_steps

    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(60, 4)), 1)
    x[rng.random(x.shape) < 0.2] = np.nan
    ids = [str(i) for i in range(60)]
    parties = {
        "g": ("guest", dataset(ids, x[:, :2], np.arange(60) % 2)),
        "h": ("host", dataset(ids, x[:, 2:])),
    }

    run = run_steps(
        parties, [("impute", ImputeParams(strategy=strategy, fill_value=7.0))], tmp_path, aligned=True
    )

    for party, block in (("g", x[:, :2]), ("h", x[:, 2:])):
        ctx = run.parties[party].context
        want = SimpleImputer(strategy=strategy, fill_value=7.0).fit_transform(block)
        np.testing.assert_allclose(np.asarray(ctx.data.x), want, atol=1e-12)
        assert ctx.preprocessing[0]["kind"] == "impute"
        np.testing.assert_allclose(apply_preprocessing(ctx.preprocessing, parties[party][1]).x, want)


@pytest.mark.timeout(180)
def test_saved_model_replays_the_imputer_at_predict(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    from sharelearn.algorithms.evaluation import PredictParams
    from sharelearn.algorithms.impute import ImputeParams
    from sharelearn.algorithms.vertical.secureboost import SecureBoostParams
    from sharelearn.testing.steps import dataset, run_steps

    x, y = load_breast_cancer(return_X_y=True)
    x, y = x[:120, :6].copy(), y[:120]
    x[np.random.default_rng(5).random(x.shape) < 0.2] = np.nan
    ids = [str(i) for i in range(len(y))]
    parties = {"g": ("guest", dataset(ids, x[:, :3], y)), "h": ("host", dataset(ids, x[:, 3:]))}
    boost = SecureBoostParams(
        num_trees=2, max_depth=2, key_bits=1024, validation_fraction=0.0, early_stopping_rounds=0
    )
    steps = [("impute", ImputeParams()), ("secureboost", boost), ("predict", PredictParams())]
    run_steps(parties, steps, tmp_path / "t", aligned=True)
    saved = PredictParams(model=str(tmp_path / "t" / "{party}" / "models" / "secureboost.model"))

    run_steps(parties, [("predict", saved)], tmp_path / "p", aligned=True)

    same_job = pd.read_csv(tmp_path / "t" / "g" / "predictions.csv")
    later = pd.read_csv(tmp_path / "p" / "g" / "predictions.csv")
    assert len(later) == 120 and np.isfinite(later["score"]).all()
    np.testing.assert_allclose(later["score"], same_job["score"], atol=1e-12)


@pytest.mark.timeout(60)
def test_training_step_on_missing_cells_names_itself_and_asks_for_impute(tmp_path: Path) -> None:
    from sharelearn.algorithms.vertical.secureboost import SecureBoostParams
    from sharelearn.testing.steps import dataset, run_steps

    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    x[3, 1] = np.nan
    ids = [str(i) for i in range(20)]
    parties = {
        "g": ("guest", dataset(ids, x[:, :1], np.arange(20) % 2)),
        "h": ("host", dataset(ids, x[:, 1:])),
    }

    with pytest.raises(Exception, match=r"step 'secureboost' cannot handle missing values: party 'h'"):
        run_steps(
            parties, [("secureboost", SecureBoostParams(key_bits=1024))], tmp_path, aligned=True, timeout=20
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["standard", "minmax", "robust"])
def test_scale_step_matches_scikit_learn_per_party(tmp_path: Path, method: str) -> None:
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    from sharelearn.algorithms.scale import ScaleParams
    from sharelearn.testing.steps import dataset, run_steps

    rng = np.random.default_rng(8)
    x = rng.normal(size=(50, 4)) * [1.0, 1000.0, 3.0, 1e5]
    x[rng.random(x.shape) < 0.1] = np.nan
    ids = [str(i) for i in range(50)]
    parties = {
        "g": ("guest", dataset(ids, x[:, :2], np.arange(50) % 2)),
        "h": ("host", dataset(ids, x[:, 2:])),
    }
    sk = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}[method]

    run = run_steps(parties, [("scale", ScaleParams(method=method))], tmp_path, aligned=True)

    for party, block in (("g", x[:, :2]), ("h", x[:, 2:])):
        got = np.asarray(run.parties[party].context.data.x)
        np.testing.assert_allclose(got, sk().fit_transform(block), atol=1e-9)
