"""Step checkpoints of one party, so `rerun --from-step S` reuses what earlier steps left.

After each step the node writes `<workdir>/checkpoint/after-<index>/`: `state.json` (the step
outputs so far, `aligned`, the split parts) and `data.npz` (this party's current rows and split
parts: its own data, which never leaves its folder) and, when a model is current, its package.
A rerun from step S restores the checkpoint after step S-1 of the original attempt into a fresh
context and runs only S and later. Loading uses `np.load(allow_pickle=False)`: no unpickling.
A TEE session cannot be restored, so a job whose earlier steps opened one is not resumable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sharelearn.algorithms.context import Dataset, StepContext
from sharelearn.algorithms.package import load_package, save_package
from sharelearn.algorithms.registry import STEPS, get_step
from sharelearn.core.errors import ConfigError
from sharelearn.core.fileio import atomic_write_json
from sharelearn.runtime.data import PartyData

__all__ = ["checkpoint_dir", "restore_checkpoint", "save_checkpoint"]


def checkpoint_dir(workdir: Path, index: int) -> Path:
    return workdir / "checkpoint" / f"after-{index}"


def _arrays(prefix: str, data: Dataset) -> dict[str, np.ndarray]:
    out = {f"{prefix}.ids": np.asarray(data.ids, dtype=str), f"{prefix}.x": np.asarray(data.x)}
    if data.y is not None:
        out[f"{prefix}.y"] = np.asarray(data.y)
    if data.weights is not None:
        out[f"{prefix}.w"] = np.asarray(data.weights)
    return out


def save_checkpoint(ctx: StepContext, index: int, outputs: dict[str, dict[str, Any]]) -> Path | None:
    """Write what steps 0..index left at this party; None (nothing written) with a TEE session."""
    if ctx.tee is not None:
        return None
    folder = checkpoint_dir(ctx.workdir, index)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    if ctx.data is not None:
        arrays |= _arrays("data", ctx.data)
    for part, rows in ctx.splits.items():
        arrays |= _arrays(f"split.{part}", rows)
    savez: Any = np.savez  # its stub types **arrays as its keyword flags
    with open(folder / "data.npz", "wb") as fh:
        savez(fh, **arrays)
    if ctx.package is not None:
        save_package(folder / "model.package", ctx.package)
    state = {
        "after": index,
        "outputs": outputs,
        "aligned": ctx.aligned,
        "splits": sorted(ctx.splits),
        "features": list(ctx.data.feature_names) if ctx.data is not None else [],
        "source": str(ctx.data.source) if ctx.data is not None else "",
        "categories": {k: list(v) for k, v in ctx.data.categories.items()} if ctx.data is not None else {},
    }
    atomic_write_json(folder / "state.json", state)  # written last: its presence marks completeness
    return folder


def _rows(
    z: Any, prefix: str, features: tuple[str, ...], source: Path, categories: dict[str, tuple[str, ...]]
) -> PartyData:
    y = z[f"{prefix}.y"] if f"{prefix}.y" in z.files else None
    w = z[f"{prefix}.w"] if f"{prefix}.w" in z.files else None
    return PartyData(z[f"{prefix}.ids"].astype(object), z[f"{prefix}.x"], y, features, source, w, categories)


def restore_checkpoint(ctx: StepContext, folder: Path) -> dict[str, dict[str, Any]]:
    """Put the checkpoint in `folder` into `ctx`; return the reused steps' outputs by step name."""
    state_file = folder / "state.json"
    if not state_file.is_file():
        raise ConfigError(
            f"rerun: {state_file} is missing: the original attempt did not finish that step at "
            f"{ctx.party}, or its steps are not resumable (a TEE session)"
        )
    state = json.loads(state_file.read_text())
    features, source = tuple(state["features"]), Path(state["source"])
    cats = {k: tuple(v) for k, v in state.get("categories", {}).items()}
    with np.load(folder / "data.npz", allow_pickle=False) as z:
        if "data.ids" in z.files:
            ctx.data = _rows(z, "data", features, source, cats)
        ctx.splits = {p: _rows(z, f"split.{p}", features, source, cats) for p in state["splits"]}
    ctx.aligned = bool(state["aligned"])
    model = folder / "model.package"
    if model.is_file():
        package = load_package(model, party=ctx.party)
        definition = get_step(package.identity.step, ctx.catalog or STEPS)
        if definition.load is None:
            raise ConfigError(f"rerun: step {package.identity.step!r} cannot reload its model")
        ctx.package, ctx.model = package, definition.load(package)
    outputs: dict[str, dict[str, Any]] = state["outputs"]
    return outputs
