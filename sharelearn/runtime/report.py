"""The report folder of a run: summary.json (the `--json` object), logs, per-party outputs.

The launcher runs every party locally, so it can also do what no party may: look at all the data
at once. It uses that to audit the wire — `leaks` counts raw ids that lie outside the
intersection, found in the bytes another party received (see `core.audit`); it is `null` when
the run was not audited (`--no-audit`, or a run that failed before the audit). A failed run's
summary keeps the steps that had finished, `error_type` (the failed party's own exception type)
and `failed_party`, and `exit_code` is what `sharelearn run` exits with.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sharelearn.algorithms.context import BaselineData
from sharelearn.algorithms.registry import get_step
from sharelearn.algorithms.split import CV_STEPS, converged_reference
from sharelearn.core.audit import SAMPLE_SECRETS, WireAudit, sample_leaks
from sharelearn.core.errors import ConfigError, PartyFailed, SharelearnError
from sharelearn.core.fileio import OutputWriteError, atomic_write_bytes, atomic_write_json
from sharelearn.runtime.control import PartyDone, exit_code_for
from sharelearn.runtime.data import read_ids, read_party_data
from sharelearn.runtime.jobspec import JobSpec

__all__ = [
    "AUDIT_SHARE",
    "LeakCount",
    "PartySummary",
    "RunSummary",
    "WireSummary",
    "add_centralized",
    "audit_mode",
    "collect_plots",
    "count_id_leaks",
    "merge_step_outputs",
    "write_summary",
]

_PLOTS = ("loss_curve.png", "roc.png")


@dataclass(frozen=True, slots=True)
class PartySummary:
    """One party of a run: its role, process, traffic and peak memory."""

    role: str
    pid: int
    bytes_sent: int
    bytes_received: int
    messages: int
    max_rss_mb: float


@dataclass(frozen=True, slots=True)
class WireSummary:
    """Traffic of the whole run, and the audit's count of leaked raw ids (None: not audited).

    `audit` is the mode ("sample", "full" or "off"); `audit_coverage` the share of all (secret id,
    received byte) pairs the leak scan searched (1.0 for a full audit), `audit_s` what it cost.
    """

    bytes: int
    messages: int
    leaks: int | None
    audit: str = "off"
    audit_coverage: float | None = None
    audit_s: float | None = None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The summary of one run: what `sharelearn run --json` prints and summary.json holds."""

    job: str
    status: Literal["success", "failed"]
    error: str | None
    error_type: str | None
    failed_party: str | None
    exit_code: int
    elapsed_s: float
    report_dir: str
    steps: dict[str, Any]
    plots: list[str]
    parties: dict[str, PartySummary]
    wire: WireSummary

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge_step_outputs(job: JobSpec, done: dict[str, PartyDone]) -> dict[str, Any]:
    """One dict per step: the first party's value of each output wins, elapsed_s is the slowest.

    `parties` holds each party's own outputs of the step (only the parties that finished it).
    """
    steps: dict[str, Any] = {}
    for step in job.steps:
        merged: dict[str, Any] = {}
        per_party: dict[str, Any] = {}
        for party in job.parties:
            out = done[party].outputs.get(step.name) if party in done else None
            if out is None:
                continue
            per_party[party] = out
            for key, value in out.items():
                if key == "elapsed_s":
                    merged[key] = max(float(value), float(merged.get(key, 0.0)))
                else:
                    merged.setdefault(key, value)
        merged["parties"] = per_party
        steps[step.name] = merged
    return steps


def add_centralized(job: JobSpec, steps: dict[str, Any]) -> None:
    """Add the centralised references to each `evaluate` output, in place.

    The launcher has every party's data at hand, so it trains the evaluated model's centralised
    twin (the training step's `baseline`, the same budget) on the pooled data
    (`<metric>_centralized`, `<metric>_delta`), and for vertical steps the model a user would train
    on the pooled data to convergence, on the same train rows, scored on the rows `evaluate`
    scored (`<metric>_converged`, `<metric>_converged_delta`; `algorithms.split`). A baseline that
    fails is reported as `centralized_error` / `converged_error` rather than failing a finished run.
    """
    trained: str | None = None
    for step in job.steps:
        definition = get_step(step.name)
        if definition.baseline is not None:
            trained = step.name
            params = step.params
            continue
        if step.name != "evaluate" or trained is None or step.name not in steps:
            continue
        out = steps["evaluate"]
        try:
            datasets: dict[str, BaselineData] = {
                p.name: (p.role, read_party_data(p.data)) for p in job.parties.values() if p.data is not None
            }
            central = get_step(trained).baseline(params, datasets)  # type: ignore[misc]
        except (SharelearnError, ValueError) as exc:
            out["centralized_error"] = f"{type(exc).__name__}: {exc}"
            continue
        _add_metrics(out, central, "centralized", "delta")
        if trained in CV_STEPS:
            _add_converged(job, out, trained, datasets)


def _add_metrics(out: dict[str, Any], reference: Mapping[str, float], name: str, delta: str) -> None:
    for metric, value in reference.items():
        out[f"{metric}_{name}"] = round(float(value), 6)
        if isinstance(out.get(metric), int | float):
            out[f"{metric}_{delta}"] = round(abs(float(out[metric]) - float(value)), 6)


def _add_converged(
    job: JobSpec, out: dict[str, Any], trained: str, datasets: dict[str, BaselineData]
) -> None:
    """The pooled model trained to convergence, on the rows the parties split (the job's seeds)."""
    psi = next((s.params for s in job.steps if s.name == "psi"), None)
    split = next((s.params for s in job.steps if s.name == "split"), None)
    try:
        converged = converged_reference(
            trained, datasets, psi_seed=getattr(psi, "seed", job.seed), split=split
        )
    except (SharelearnError, ValueError) as exc:
        out["converged_error"] = f"{type(exc).__name__}: {exc}"
        return
    _add_metrics(out, converged, "converged", "converged_delta")


def collect_plots(job: JobSpec, report: Path) -> list[str]:
    """Copy the plots parties wrote (ROC, loss curve) to the report folder; return their names."""
    found: list[str] = []
    for name in job.parties:
        for plot in _PLOTS:
            source = report / "parties" / name / plot
            if source.is_file() and plot not in found:
                with contextlib.suppress(OutputWriteError):  # the party's copy is still there
                    atomic_write_bytes(report / plot, source.read_bytes())
                    found.append(plot)
    return found


AUDIT_SHARE = 0.05  # the default audit may cost at most this share of the job's wall time


@dataclass(frozen=True, slots=True)
class LeakCount:
    """The audit's result: leaked ids found, and what share of (id, received byte) it searched."""

    leaks: int
    scanned_bytes: int
    received_bytes: int
    coverage: float = 1.0


def _secrets(ids: dict[str, np.ndarray], owner: str, sample: int | None) -> tuple[list[object], int]:
    """The owner's ids outside the intersection (or a random `sample` of them), and how many there are.

    A sample is drawn (OS CSPRNG) from the owner's ids and kept if some other party lacks it; the
    count is then estimated from the share of drawn ids kept.
    """
    owned = ids[owner].tolist()
    others = [set(v.tolist()) for other, v in ids.items() if other != owner]
    picked = owned
    if sample is not None and len(owned) > sample:
        draw = np.random.default_rng(secrets.randbits(128)).choice(len(owned), 4 * sample, replace=False)
        picked = [owned[i] for i in draw.tolist()]
    outside = [i for i in picked if not all(i in theirs for theirs in others)]
    if picked is owned:
        return outside, len(outside)
    return outside[:sample], round(len(owned) * len(outside) / len(picked))


def count_id_leaks(job: JobSpec, report: Path, *, budget_s: float | None = None) -> LeakCount:
    """Count raw ids outside the intersection that appear in bytes another party received.

    With `budget_s` None the scan is exhaustive (`--audit full`); otherwise the whole check,
    reading included, aims at `budget_s`: each (owner, receiver) pair searches a random sample of
    the owner's ids over random pieces of what the receiver got (`core.audit.sample_leaks`).
    """
    started = time.perf_counter()
    data_parties = [p for p in job.parties.values() if p.data is not None]
    ids = {p.name: np.asarray(read_ids(p.data), dtype=object) for p in data_parties if p.data is not None}
    if not ids:
        return LeakCount(0, 0, 0)
    audits = {
        name: WireAudit.load(path)
        for name in job.parties
        if (path := report / "parties" / name / "audit.msgpack").is_file()
    }
    pairs = [(o, r) for o in ids for r in audits if r != o]
    owned = {o: _secrets(ids, o, None if budget_s is None else SAMPLE_SECRETS) for o in ids}
    leaks = scanned = total = 0
    searched = 0.0  # bytes x share of the owner's ids searched, summed over pairs
    for k, (owner, receiver) in enumerate(pairs):
        secret_ids, n_secrets = owned[owner]
        received = audits[receiver].received(receiver)
        total += sum(len(b) for b in received)
        if budget_s is None:
            leaks += audits[receiver].count_leaks(receiver, secret_ids)
            scanned += sum(len(b) for b in received)
            searched += sum(len(b) for b in received)
            continue
        left = budget_s - (time.perf_counter() - started)
        found = sample_leaks(received, secret_ids, max(left, 0.0) / (len(pairs) - k))
        leaks, scanned = leaks + found.leaks, scanned + found.scanned
        searched += found.scanned * (len(secret_ids) / n_secrets if n_secrets else 1.0)
    return LeakCount(leaks, scanned, total, round(searched / total, 4) if total else 1.0)


def audit_mode(audit: bool | str) -> str:
    """ "sample" (the default check), "full" (exhaustive; `True`) or "off" (`False`)."""
    if audit is True or audit == "full":
        return "full"
    if audit is False or audit == "off":
        return "off"
    if audit == "sample":
        return "sample"
    raise ConfigError(f"--audit must be sample, full or off, got {audit!r}")


def _party_summary(role: str, pid: int, done: PartyDone | None) -> PartySummary:
    traffic = {} if done is None else done.traffic
    return PartySummary(
        role=role,
        pid=pid,
        bytes_sent=int(traffic.get("bytes_sent", 0)),
        bytes_received=int(traffic.get("bytes_received", 0)),
        messages=int(traffic.get("messages_sent", 0)),
        max_rss_mb=round(float(0.0 if done is None else done.max_rss_mb), 1),
    )


def write_summary(
    job: JobSpec,
    report: Path,
    elapsed_s: float,
    error: SharelearnError | None,
    pids: dict[str, int],
    done: dict[str, PartyDone],
    *,
    audit: bool | str,
    exit_code: int | None = None,
    baseline: bool = True,
    error_type: str | None = None,
) -> dict[str, Any]:
    """Build the run's summary, write it atomically to `report/summary.json`, and return it.

    The centralised references (`baseline`) are trained here, after the run's `elapsed_s` was taken.
    """
    parties = {
        name: _party_summary(spec.role, pids.get(name, 0), done.get(name))
        for name, spec in job.parties.items()
    }
    mode = audit_mode(audit)
    audit_started = time.perf_counter()
    count = None
    if mode != "off" and error is None:
        count = count_id_leaks(job, report, budget_s=None if mode == "full" else AUDIT_SHARE * elapsed_s)
    audit_s = round(time.perf_counter() - audit_started, 4) if count is not None else None
    steps = merge_step_outputs(job, done)
    if error is not None:  # a failed run keeps the steps some party had finished
        steps = {name: out for name, out in steps.items() if out["parties"]}
    if error is None and baseline:
        add_centralized(job, steps)
    summary = RunSummary(
        job=job.name,
        status="failed" if error is not None else "success",
        error=None if error is None else str(error),
        error_type=None if error is None else (error_type or type(error).__name__),
        failed_party=error.party if isinstance(error, PartyFailed) else None,
        exit_code=(0 if error is None else 1) if exit_code is None else exit_code,
        elapsed_s=round(elapsed_s, 4),
        report_dir=str(report),
        steps=steps,
        plots=collect_plots(job, report) if error is None else [],
        parties=parties,
        wire=WireSummary(
            bytes=sum(p.bytes_sent for p in parties.values()),
            messages=sum(p.messages for p in parties.values()),
            leaks=None if count is None else count.leaks,
            audit=mode,
            audit_coverage=None
            if count is None
            else round(count.scanned_bytes / max(count.received_bytes, 1), 4),
            audit_s=audit_s,
        ),
    ).as_dict()
    return _save_summary(report, summary)


def _save_summary(report: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write summary.json; on a full disk try a smaller one, and say so in the summary returned."""
    try:
        atomic_write_json(report / "summary.json", summary)
        return summary
    except OutputWriteError as exc:
        failed = {
            **summary,
            "status": "failed",
            "error": "; ".join(e for e in (summary["error"], str(exc)) if e),
            "error_type": summary["error_type"] or type(exc).__name__,
            "exit_code": summary["exit_code"] or exit_code_for(exc),
        }
    small = {**failed, "steps": {}, "plots": []}
    try:
        atomic_write_json(report / "summary.json", small)
    except OutputWriteError as exc:
        failed["error"] += f"; {exc}"
    return failed
