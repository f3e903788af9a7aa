"""Worker-side checks without processes: approval policy rules, data-path confinement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import APPROVE_ALL, DEMO_JOB

from sharelearn.algorithms.registry import step_params
from sharelearn.core.errors import ConfigError
from sharelearn.runtime.agent.policy import load_policy
from sharelearn.runtime.agent.task import prepare_job
from sharelearn.runtime.jobspec import parse_job

JOB = parse_job(DEMO_JOB % {"epochs": 1}, base_dir=Path("/data"), step_params=step_params())


def _policy(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


def test_policy_rules_approve_only_what_they_name(tmp_path: Path) -> None:
    assert load_policy(None).decide(JOB, "bank", "admin") == "ask"  # default: a person decides
    assert _policy(tmp_path, APPROVE_ALL).decide(JOB, "bank", "admin") == "approve"
    narrow = "auto_approve:\n  - peers: [bank, shop]\n"  # the job also has coord
    assert _policy(tmp_path, narrow).decide(JOB, "bank", "admin") == "ask"
    steps = "default: reject\nauto_approve:\n  - steps: [psi]\n"  # the job also trains
    assert _policy(tmp_path, steps).decide(JOB, "bank", "admin") == "reject"
    who = "auto_approve:\n  - submitters: [bank]\n    datasets: [breast_hetero_guest.csv]\n"
    assert _policy(tmp_path, who).decide(JOB, "bank", "bank") == "approve"
    assert _policy(tmp_path, who).decide(JOB, "bank", "mallory") == "ask"
    assert _policy(tmp_path, who).decide(JOB, "shop", "bank") == "ask"  # shop's file is not listed
    with pytest.raises(ConfigError, match="auto_approve\\[0\\].peers must be a list"):
        _policy(tmp_path, "auto_approve:\n  - peers: bank\n")
    with pytest.raises(ConfigError, match="default must be"):
        _policy(tmp_path, "default: maybe\n")


def test_a_job_cannot_read_outside_the_workers_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ok = prepare_job(DEMO_JOB % {"epochs": 1}, "bank", data, tmp_path / "job1")
    assert str(data.resolve() / "breast_hetero_guest.csv") in ok.read_text()
    for evil in ("../secrets.csv", "/etc/passwd", "sub/../../x.csv"):
        spec = (DEMO_JOB % {"epochs": 1}).replace("path: breast_hetero_guest.csv", f"path: {evil}")
        with pytest.raises(ConfigError, match="leaves the worker's data folder"):
            prepare_job(spec, "bank", data, tmp_path / "job2")
    with pytest.raises(ConfigError, match="party 'mallory' is not in it"):
        prepare_job(DEMO_JOB % {"epochs": 1}, "mallory", data, tmp_path / "job3")


def test_the_node_reads_the_revocation_list_the_worker_wrote(tmp_path: Path) -> None:
    from sharelearn.runtime.worker import load_crl

    good = tmp_path / "crl.json"
    good.write_text('{"revoked_serials": ["AB12", "ff"]}')
    assert load_crl(good) == ["ab12", "ff"] and load_crl(None) == []
    bad = tmp_path / "bad.json"
    bad.write_text('{"revoked_serials": "ab12"}')
    with pytest.raises(ConfigError, match=r"bad.json: not a revocation list"):
        load_crl(bad)


def test_a_checkpoint_restores_the_rows_and_splits_and_a_missing_one_is_named(tmp_path: Path) -> None:
    import numpy as np

    from sharelearn.algorithms.context import StepContext
    from sharelearn.runtime.data import PartyData
    from sharelearn.runtime.resume import checkpoint_dir, restore_checkpoint, save_checkpoint

    rows = PartyData(
        np.array(["b", "a", "c"], dtype=object),
        np.arange(6.0).reshape(3, 2),
        np.array([1.0, 0, 1]),
        ("x1", "x2"),
        tmp_path / "bank.csv",
    )
    link: Any = None  # checkpoints never touch the link

    def fresh() -> StepContext:
        return StepContext(
            link=link,
            party="bank",
            roles={"bank": "guest"},
            data=None,
            data_parties=["bank"],
            workdir=tmp_path,
        )

    ctx = fresh()
    ctx.data, ctx.aligned, ctx.splits = rows.take([1, 0]), True, {"all": rows, "train": rows.take([2])}
    save_checkpoint(ctx, 0, {"psi": {"intersection": 2}})
    back = fresh()
    assert restore_checkpoint(back, checkpoint_dir(tmp_path, 0)) == {"psi": {"intersection": 2}}
    assert back.aligned and back.data is not None and list(back.data.ids) == ["a", "b"]
    assert np.array_equal(back.data.x, rows.x[[1, 0]]) and back.data.feature_names == ("x1", "x2")
    assert list(back.splits["train"].ids) == ["c"] and back.model is None
    with pytest.raises(ConfigError, match=r"after-1/state.json is missing"):
        restore_checkpoint(fresh(), checkpoint_dir(tmp_path, 1))
