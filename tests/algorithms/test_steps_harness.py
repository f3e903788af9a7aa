from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.evaluation import EvaluateParams
from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.core.errors import PartyFailed
from sharelearn.operators.psi import PsiParams
from sharelearn.testing.steps import dataset, run_steps


def test_psi_then_the_context_is_shared_across_steps(tmp_path: Path) -> None:
    a = dataset(["u1", "u2", "u3", "u4"], np.arange(4.0), y=np.array([0, 1, 0, 1]))
    b = dataset(["u4", "u2", "u9"], np.arange(3.0) * 10)
    run = run_steps({"bank": ("guest", a), "shop": ("host", b)}, [("psi", PsiParams())], tmp_path)
    assert run.parties["bank"].outputs["psi"]["intersection_size"] == 2
    assert list(run.parties["bank"].data.ids) == list(run.parties["shop"].data.ids)
    assert run.parties["shop"].context.aligned is True
    assert (tmp_path / "bank" / "intersection_ids.csv").is_file()


def test_evaluate_without_a_model_names_the_missing_step(tmp_path: Path) -> None:
    a = dataset(["u1"], np.zeros(1), y=np.zeros(1))
    with pytest.raises(PartyFailed, match="needs a model"):
        run_steps({"bank": ("guest", a)}, [("evaluate", EvaluateParams())], tmp_path)


def test_pool_vertical_joins_on_common_ids_in_id_order() -> None:
    a = dataset(["b", "a", "c"], np.array([2.0, 1.0, 3.0]), y=np.array([1, 0, 1]))
    b = dataset(["c", "a", "z"], np.array([[30.0, 31.0], [10.0, 11.0], [0.0, 0.0]]))
    x, y = pool_vertical({"bank": ("guest", a), "shop": ("host", b)})
    np.testing.assert_array_equal(x, [[1.0, 10.0, 11.0], [3.0, 30.0, 31.0]])
    np.testing.assert_array_equal(y, [0, 1])
