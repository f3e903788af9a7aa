"""What a step's role function gets from the runtime: its link, data, parameters and a progress hook."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sharelearn.core.link import Link
from sharelearn.core.types import PartyId

__all__ = ["Dataset", "StepContext", "StepDef"]


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
    """

    link: Link
    party: PartyId
    roles: Mapping[PartyId, str]
    data: Dataset | None
    data_parties: Sequence[PartyId]
    workdir: Path
    state: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str, Mapping[str, Any]], None] = lambda message, metrics: None

    @property
    def role(self) -> str:
        return self.roles[self.party]


@dataclass(frozen=True, slots=True)
class StepDef:
    """A step of the job format: its parameters type and the function every party runs for it."""

    name: str
    params: type
    run: Callable[[StepContext, Any], dict[str, Any]]
    summary: str = ""
