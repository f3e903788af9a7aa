"""run_party_steps(): one party's run of a job's steps, the one step runner of every route.

The party worker (`sharelearn node`), the in-process test harness (`testing.steps.run_steps`) and the
coordinator's task executor all call it: it scopes the party's link per step (tags become
`step/<index>/<name>/...`), hands the same `StepContext` from step to step, and reports each step's
start, progress and outputs to an observer. What a step leaves for later steps lives in the
context's typed fields (`aligned`, `model`, `tee`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sharelearn.algorithms.context import StepContext, StepDef
from sharelearn.algorithms.preprocess import require_complete
from sharelearn.algorithms.registry import STEPS, get_step
from sharelearn.core.link import Link

__all__ = ["Checkpoint", "Resume", "StepObserver", "StepResult", "run_party_steps", "run_step"]


class StepObserver(Protocol):
    """Who watches a party's steps: the launcher's control channel, a coordinator, a test."""

    def started(self, index: int, step: str) -> None: ...

    def progress(self, step: str, message: str, metrics: Mapping[str, Any]) -> None: ...

    def done(self, index: int, step: str, result: StepResult) -> None: ...


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step returned at one party, and how long it took there."""

    outputs: dict[str, Any]
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        """The outputs with `elapsed_s` added: the per-party record of the run's summary."""
        return {**self.outputs, "elapsed_s": round(self.elapsed_s, 4)}


@dataclass(frozen=True, slots=True)
class Resume:
    """A rerun from step number `start`: the outputs (`StepResult.as_dict` records) of the steps
    before it, which the context already holds (restored from their checkpoint)."""

    start: int
    outputs: Mapping[str, Mapping[str, Any]]


Checkpoint = Callable[[StepContext, int, dict[str, dict[str, Any]]], object]
"""Called after each step that ran: (context, step index, every step's record so far)."""


class _Silent:
    def started(self, index: int, step: str) -> None:
        pass

    def progress(self, step: str, message: str, metrics: Mapping[str, Any]) -> None:
        pass

    def done(self, index: int, step: str, result: StepResult) -> None:
        pass


def run_step(
    ctx: StepContext,
    link: Link,
    index: int,
    name: str,
    params: Any,
    observer: StepObserver | None = None,
) -> StepResult:
    """Run step number `index` of a job (its name and parsed parameters) as this party."""
    watch = observer or _Silent()
    definition: StepDef = get_step(name, ctx.catalog or STEPS)
    ctx.link = link.scope("step", index, name)
    ctx.step_index = index

    def progress(message: str, metrics: Mapping[str, Any]) -> None:
        watch.progress(name, message, metrics)

    ctx.progress = progress
    if not definition.handles_missing:
        require_complete(ctx, name)
    watch.started(index, name)
    started = time.perf_counter()
    result = StepResult(definition.run(ctx, params), time.perf_counter() - started)
    watch.done(index, name, result)
    return result


def _reused(steps: Sequence[tuple[str, Any]], resume: Resume, watch: StepObserver) -> dict[str, StepResult]:
    """The steps before `resume.start`, reported as done (and reused) without running."""
    results: dict[str, StepResult] = {}
    for i, (name, _) in enumerate(steps[: resume.start]):
        record = dict(resume.outputs[name])
        watch.started(i, name)
        watch.done(i, name, StepResult({**record, "reused": True}, 0.0))
        elapsed = float(record.pop("elapsed_s", 0.0))
        results[name] = StepResult(record, elapsed)
    return results


def run_party_steps(
    ctx: StepContext,
    link: Link,
    steps: Sequence[tuple[str, Any]],
    observer: StepObserver | None = None,
    *,
    resume: Resume | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, StepResult]:
    """Run `steps` ((name, params) in job order) as this party over `link`; results by step name.

    `resume` skips the steps before `resume.start` (reported as reused); `checkpoint` is called
    after each step that ran, with every step's record so far (the worker keeps them for reruns).
    """
    if not ctx.catalog:
        ctx.catalog = STEPS
    watch = observer or _Silent()
    results = _reused(steps, resume, watch) if resume is not None else {}
    for i in range(resume.start if resume is not None else 0, len(steps)):
        name, params = steps[i]
        results[name] = run_step(ctx, link, i, name, params, watch)
        if checkpoint is not None:
            checkpoint(ctx, i, {n: r.as_dict() for n, r in results.items()})
    return results
