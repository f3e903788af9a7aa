"""Role and party mistakes fail when the job is parsed (exit 2), before PSI or any step runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.registry import step_params
from sharelearn.algorithms.rolecheck import ROLE_CHECKS
from sharelearn.core.errors import ConfigError, DataError, PartyFailed
from sharelearn.interfaces.cli.app import exit_code
from sharelearn.operators.psi import PsiParams
from sharelearn.runtime.jobspec import parse_job
from sharelearn.runtime.launcher import _report_dir
from sharelearn.testing.steps import dataset, run_steps

BANK = "  bank: {role: guest, data: {path: bank.csv, label: y}}\n"
SHOP = "  shop: {role: host, data: shop.csv}\n"
COORD = "  coord: {role: arbiter}\n"


def _error(parties: str, steps: str) -> ConfigError:
    text = f"parties:\n{parties}steps:\n{steps}"
    with pytest.raises(ConfigError) as info:
        parse_job(text, source="job.yaml", step_params=step_params(), step_checks=ROLE_CHECKS)
    return info.value


@pytest.mark.parametrize(
    ("parties", "steps", "message"),
    [
        (
            BANK + SHOP,
            "  - psi: {}\n  - hetero_lr: {}\n",
            r"steps\[1\]\.hetero_lr \(line 6\): .*role arbiter",
        ),
        (
            BANK + "  bank2: {role: guest, data: b2.csv}\n" + SHOP + COORD,
            "  - psi: {}\n  - hetero_lr: {}\n",
            r"hetero_lr needs 1 party with role guest, the job has \['bank', 'bank2'\]",
        ),
        (
            BANK + SHOP,
            "  - psi: {receivers: [bank, shopp]}\n",
            r"psi\.receivers: \['shopp'\] are not parties",
        ),
        (BANK + SHOP + COORD, "  - hetero_lr: {}\n", r"put `psi` before it"),
        (BANK + SHOP, "  - psi: {}\n  - ss_lr: {reveal_to: [coord]}\n", r"ss_lr\.reveal_to: \['coord'\]"),
        (BANK + SHOP, "  - fedavg: {}\n", r"fedavg needs 1 party with role server"),
        (BANK, "  - psi: {}\n", r"psi needs at least two parties with data"),
        (
            BANK + SHOP,
            "  - psi: {}\n  - cross_validate: {step: hetero_lr}\n",
            r"cross_validate \(line 6\): hetero_lr \(mode arbiter\) needs 1 party with role arbiter",
        ),
        (
            BANK + "  shop: {role: host}\n" + COORD,
            "  - psi: {}\n",
            r"psi needs at least two parties with data",
        ),
    ],
)
def test_role_mistakes_fail_at_parse_time_naming_the_step(parties: str, steps: str, message: str) -> None:
    error = _error(parties, steps)

    assert error.__class__ is ConfigError and exit_code(error) == 2
    assert str(error).startswith("job.yaml: steps[")
    assert re.search(message, str(error)), str(error)


def test_a_correct_job_passes_every_check() -> None:
    text = f"parties:\n{BANK}{SHOP}{COORD}steps:\n  - psi: {{}}\n  - split: {{}}\n  - hetero_lr: {{}}\n"

    job = parse_job(text, step_params=step_params(), step_checks=ROLE_CHECKS)

    assert [s.name for s in job.steps] == ["psi", "split", "hetero_lr"]


def test_an_empty_intersection_is_a_data_error_naming_the_step(tmp_path: Path) -> None:
    a = dataset(["a1", "a2"], np.zeros(2), y=np.array([0.0, 1.0]))
    b = dataset(["b1"], np.zeros(1))

    with pytest.raises(PartyFailed, match=r"psi: .*no id in common") as info:
        run_steps({"bank": ("guest", a), "shop": ("host", b)}, [("psi", PsiParams())], tmp_path)

    assert info.value.reason.startswith("DataError") and exit_code(DataError(info.value.reason)) == 3


def test_a_relative_report_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    folder = _report_dir(parse_job(f"parties:\n{BANK}steps:\n  - evaluate: {{}}\n"), Path("rel/report"))

    assert folder.is_absolute() and folder == tmp_path / "rel" / "report" and folder.is_dir()
