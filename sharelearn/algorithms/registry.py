"""Step name -> definition: the steps a job file may list."""

from __future__ import annotations

from collections.abc import Mapping

from sharelearn.algorithms.alignment import PSI_STEP
from sharelearn.algorithms.context import StepDef
from sharelearn.algorithms.evaluation import EVALUATE_STEP, PREDICT_STEP
from sharelearn.algorithms.horizontal.fedavg import FEDAVG_STEP
from sharelearn.algorithms.impute import IMPUTE_STEP
from sharelearn.algorithms.mpc.ss_lr import SS_LR_STEP
from sharelearn.algorithms.scale import SCALE_STEP
from sharelearn.algorithms.split import CROSS_VALIDATE_STEP, SPLIT_STEP
from sharelearn.algorithms.tee.steps import TEE_STEPS
from sharelearn.algorithms.vertical.hetero_lr import HETERO_LR_STEP
from sharelearn.algorithms.vertical.secureboost import SECUREBOOST_STEP
from sharelearn.core.errors import ConfigError

__all__ = ["STEPS", "get_step", "step_params"]

STEPS: Mapping[str, StepDef] = {
    s.name: s
    for s in (
        PSI_STEP,
        SPLIT_STEP,
        CROSS_VALIDATE_STEP,
        EVALUATE_STEP,
        PREDICT_STEP,
        HETERO_LR_STEP,
        FEDAVG_STEP,
        SECUREBOOST_STEP,
        SS_LR_STEP,
        *TEE_STEPS,
        IMPUTE_STEP,
        SCALE_STEP,
    )
}


def get_step(name: str, catalog: Mapping[str, StepDef] = STEPS) -> StepDef:
    """The definition of step `name` (in `catalog`, by default every step of the job format)."""
    try:
        return catalog[name]
    except KeyError:
        raise ConfigError(f"unknown step {name!r}; known steps: {', '.join(sorted(catalog))}") from None


def step_params() -> dict[str, type]:
    """Step name -> parameters dataclass, as the job spec loader wants it."""
    return {name: s.params for name, s in STEPS.items()}
