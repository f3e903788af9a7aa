"""What a step's role function gets from the runtime: its link, data, parameters and a progress hook."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sharelearn.core.link import Link
from sharelearn.core.types import PartyId

__all__ = ["BaselineData", "Dataset", "StepContext", "StepDef", "TrainedModel"]


class Dataset(Protocol):
    """A party's table: string ids, float features, optional float labels (runtime.data.PartyData)."""

    @property
    def ids(self) -> np.ndarray: ...

    @property
    def x(self) -> np.ndarray: ...

    @property
    def y(self) -> np.ndarray | None: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def source(self) -> Path: ...

    def take(self, indices: np.ndarray) -> Dataset: ...

    def __len__(self) -> int: ...


@dataclass
class StepContext:
    """One party's view of a running job, handed to each step in turn.

    Attributes:
        link: the party's link (already scoped to the step).
        party: this party's name.
        roles: every party of the job and its role, in job order.
        data: this party's rows (aligned to the common ids once `psi` has run), or None.
        data_parties: parties that hold data, in job order.
        state: values a step leaves for later steps (models, alignment flags).
        workdir: this party's own output folder.
        progress: report a line of progress (and optional metrics) to the launcher.
        job_dir: the job file's folder; relative paths in step parameters are resolved against it.
    """

    link: Link
    party: PartyId
    roles: Mapping[PartyId, str]
    data: Dataset | None
    data_parties: Sequence[PartyId]
    workdir: Path
    state: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str, Mapping[str, Any]], None] = lambda message, metrics: None
    job_dir: Path = Path(".")

    @property
    def role(self) -> str:
        return self.roles[self.party]


class TrainedModel(Protocol):
    """This party's part of a trained model, left in `ctx.state["model"]` by a training step.

    `evaluate` and `predict` drive it; every party of the job calls `predict` in the same step, so
    collaborative prediction is a protocol like any other (each party sends only what its role may).

    Attributes:
        step: the name of the step that trained it; that step's `StepDef.load` reads it back.
        task: "binary" (scores are P(y=1), shape (n,)), "multiclass" (probabilities, shape (n, k))
            or "regression" (predictions, shape (n,)).
        history: per-epoch (or per-round / per-tree) training curves, e.g. {"loss": [...]}; may be empty.
    """

    @property
    def step(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def history(self) -> Mapping[str, Sequence[float]]: ...

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        """Run this party's role of prediction on `data` (rows aligned across parties).

        Returns the scores at the party that may learn them (the label holder), None elsewhere.
        """
        ...

    def save(self, path: Path) -> Path:
        """Write this party's part only (never another party's secrets) atomically; return the path."""
        ...


# A party's role and its table, as the launcher reads them for a centralised baseline.
BaselineData = tuple[str, Dataset]


@dataclass(frozen=True, slots=True)
class StepDef:
    """A step of the job format: its parameters type and the function every party runs for it.

    Attributes:
        load: for training steps, read one party's saved model part (`TrainedModel.save`) back.
        baseline: for training steps, train the same model on the pooled data of every party
            (party -> (role, table), the launcher's view when all data is local) and return the
            metrics `evaluate` reports (e.g. {"auc": ...}); the report adds `<metric>_centralized`
            and `<metric>_delta`. Only ever run by a local launcher, never by a party.
    """

    name: str
    params: type
    run: Callable[[StepContext, Any], dict[str, Any]]
    summary: str = ""
    load: Callable[[Path], TrainedModel] | None = None
    baseline: Callable[[Any, Mapping[PartyId, BaselineData]], dict[str, float]] | None = None
