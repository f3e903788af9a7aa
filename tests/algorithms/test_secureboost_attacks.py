"""SecureBoost against a misbehaving peer: every forged message fails the run, naming peer and tag."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from sharelearn.algorithms.vertical import secureboost as sb
from sharelearn.algorithms.vertical.secureboost import SecureBoostParams
from sharelearn.core.errors import DecodeError, PartyFailed
from sharelearn.testing.steps import dataset, run_steps

pytestmark = pytest.mark.timeout(120)

SMALL = SecureBoostParams(
    num_trees=1, max_depth=2, max_bins=8, key_bits=1024, validation_fraction=0.0, early_stopping_rounds=0
)


def _parties(rows: int = 120) -> dict[str, tuple[str, Any]]:
    x, y = load_breast_cancer(return_X_y=True)
    ids = [f"p{i}" for i in range(rows)]
    return {
        "guest": ("guest", dataset(ids, x[:rows, :5], y[:rows])),
        "host": ("host", dataset(ids, x[:rows, 5:15])),
    }


def _run(tmp_path: Path) -> None:
    run_steps(_parties(), [("secureboost", SMALL)], tmp_path, aligned=True, timeout=60)


def _failure(exc: pytest.ExceptionInfo[PartyFailed]) -> str:
    return f"{exc.value.party}: {exc.value.reason}"


def test_an_honest_run_of_the_attack_fixture_completes(tmp_path: Path) -> None:
    run = run_steps(_parties(), [("secureboost", replace(SMALL, num_trees=2))], tmp_path, aligned=True)

    assert run.parties["guest"].outputs["secureboost"]["trees"] == 2
    assert run.parties["host"].outputs["secureboost"]["splits"] > 0


def test_host_refuses_a_split_on_a_feature_position_it_never_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = sb._guest_choose

    def forge(run: Any, tree: Any, lv: Any, *args: Any) -> None:
        honest(run, tree, lv, *args)
        for wins in lv.wins.values():  # probe a feature position beyond the host's table
            wins[:] = [sb.Win(w.node, np.asarray([[10_000, 0]], dtype=np.int64)) for w in wins]

    monkeypatch.setattr(sb, "_guest_choose", forge)

    with pytest.raises(PartyFailed) as exc:
        _run(tmp_path)

    assert _failure(exc).startswith("host:") and "split from 'guest': feature position 10000" in _failure(exc)


def test_guest_refuses_histograms_of_another_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    honest = sb._host_histograms

    def forge(run: Any, tr: Any, level: list[int]) -> Any:
        return honest(run, tr, level)[:, : run.params.max_bins]  # one feature's bins only

    monkeypatch.setattr(sb, "_host_histograms", forge)

    with pytest.raises(PartyFailed) as exc:
        _run(tmp_path)

    assert _failure(exc).startswith("guest:") and "hist from 'host'" in _failure(exc)


def test_host_refuses_a_partition_mask_of_the_wrong_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = sb.Child

    def forge(node: int, left: int, right: int, mask: bytes) -> Any:
        return honest(node, left, right, mask + b"\x00")

    monkeypatch.setattr(sb, "Child", forge)

    with pytest.raises(PartyFailed) as exc:
        _run(tmp_path)

    assert _failure(exc).startswith("host:") and "children from 'guest'" in _failure(exc)


@pytest.mark.parametrize(
    ("kind", "wire", "match"),
    [
        (sb.Win, {"node": 1, "ties": np.zeros((0, 2), dtype=np.int64)}, "ties must be"),
        (sb.Win, {"node": True, "ties": np.zeros((1, 2), dtype=np.int64)}, "expected int"),
        (sb.Expand, {"nodes": [0, "1"]}, "expected int"),
        (sb.Start, {"tree": 1, "extra": 2}, "unknown fields"),
        (sb.Partition, {"cuts": [{"split_id": 0}]}, "missing fields"),
    ],
)
def test_malformed_messages_are_refused_before_the_role_sees_them(
    kind: type[Any], wire: dict[str, Any], match: str
) -> None:
    with pytest.raises(DecodeError, match=match) as exc:
        kind.from_wire(wire, peer="mallory")

    assert "mallory" in str(exc.value)
