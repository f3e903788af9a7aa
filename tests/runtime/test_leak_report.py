from __future__ import annotations

from pathlib import Path

import pytest

from sharelearn.algorithms.registry import step_params
from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import encode
from sharelearn.runtime.jobspec import load_job
from sharelearn.runtime.report import count_id_leaks


def _report_with_planted_leak(tmp_path: Path, n: int, leaked: int) -> Path:
    bank = [10**9 + k for k in range(n)]
    shop = bank[: n // 2] + [2 * 10**9 + k for k in range(n - n // 2)]
    (tmp_path / "bank.csv").write_text("id,x0\n" + "".join(f"{i},1\n" for i in bank))
    (tmp_path / "shop.csv").write_text("id,x1\n" + "".join(f"{i},2\n" for i in shop))
    job = tmp_path / "job.yaml"
    job.write_text(
        "job: leak\nparties:\n  bank: {role: guest, data: {path: bank.csv, id: id}}\n"
        "  shop: {role: host, data: {path: shop.csv, id: id}}\nsteps:\n  - psi: {}\n"
    )
    audit = WireAudit()  # shop received, in the clear, `leaked` of bank's ids outside the intersection
    audit.record("bank", "shop", "oops", encode([str(i) for i in bank[n // 2 : n // 2 + leaked]]))
    audit.record("bank", "shop", "fine", encode([str(i) for i in bank[:50]]))  # shared ids: no leak
    audit.save(tmp_path / "report" / "parties" / "shop" / "audit.msgpack")
    return job


@pytest.mark.parametrize("budget_s", [None, 30.0])
def test_both_audits_count_exactly_the_leaked_ids_when_the_sample_covers_all(
    tmp_path: Path, budget_s: float | None
) -> None:
    job = _report_with_planted_leak(tmp_path, 2000, 37)

    count = count_id_leaks(load_job(job, step_params=step_params()), tmp_path / "report", budget_s=budget_s)

    assert count.leaks == 37 and count.coverage == 1.0


def test_a_sampled_audit_of_many_ids_still_sees_a_mass_leak(tmp_path: Path) -> None:
    job = _report_with_planted_leak(tmp_path, 20_000, 5000)  # half of bank's 10,000 private ids

    count = count_id_leaks(load_job(job, step_params=step_params()), tmp_path / "report", budget_s=30.0)

    assert 1500 < count.leaks < 2600  # about half of the 4096 ids it drew
    assert 0.3 < count.coverage < 0.5  # 4096 of ~10,000 private ids, every byte
