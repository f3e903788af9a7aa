"""The task flow manager: check a submitted job and split it into one task per party per step.

The coordinator reads the job YAML only to learn who takes part and which steps run; it never opens
a data file (the paths in the job are the workers' own, relative to each worker's data folder).
`retries: N` is the coordinator's key: it is taken out before the job reaches the workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sharelearn.algorithms.registry import step_params
from sharelearn.core.errors import ConfigError
from sharelearn.runtime.jobspec import JobSpec, parse_job

__all__ = ["SubmittedJob", "check_job", "model_id", "strip_coordinator_keys"]

_COORDINATOR_KEYS = ("retries",)


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """What the coordinator keeps of a job: its text, digest, parties, steps and retry budget."""

    text: str
    digest: str
    spec: JobSpec
    retries: int

    @property
    def parties(self) -> list[str]:
        return list(self.spec.parties)

    @property
    def data_parties(self) -> list[str]:
        return [p.name for p in self.spec.data_parties()]

    @property
    def steps(self) -> list[str]:
        return [s.name for s in self.spec.steps]


def strip_coordinator_keys(text: str) -> tuple[str, dict[str, Any]]:
    """The job YAML without the coordinator's own keys, and those keys' values."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"job: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError("job: must be a mapping with `parties` and `steps`")
    own = {k: doc.pop(k) for k in _COORDINATOR_KEYS if k in doc}
    if not own:
        return text, {}
    return yaml.safe_dump(doc, sort_keys=False), own


def check_job(text: str, source: str = "<submitted job>") -> SubmittedJob:
    """Parse and check a submitted job (the same checks `sharelearn run` makes); raise `ConfigError`."""
    clean, own = strip_coordinator_keys(text)
    retries = own.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise ConfigError(f"{source}: `retries` must be an integer in 0..10, got {retries!r}")
    spec = parse_job(
        clean, source=source, base_dir=Path("/nonexistent-coordinator"), step_params=step_params()
    )
    digest = hashlib.sha256(text.encode()).hexdigest()
    return SubmittedJob(text, digest, spec, retries)


def model_id(run_id: str, step_index: int, step: str) -> str:
    """The id the parties give the model step `step_index` trains (see `algorithms.package.model_id_for`)."""
    return hashlib.sha256(f"sharelearn-model|{run_id}|{step_index}|{step}".encode()).hexdigest()[:32]
