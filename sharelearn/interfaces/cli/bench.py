"""`sharelearn bench NAME [ARGS]`: run a benchmark from `benchmarks/` (needs a source checkout)."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from sharelearn.core.errors import ConfigError

__all__ = ["bench_command"]


def bench_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="psi | paillier | ...")],
) -> int:
    """Run a benchmark; it prints ratios against a baseline measured in the same run."""
    module_name = f"benchmarks.bench_{name.replace('-', '_')}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (module_name, "benchmarks"):
            raise
        raise ConfigError(
            f"no benchmark {name!r} ({module_name} not found; run from a source checkout)"
        ) from exc
    return int(module.main(list(ctx.args)))
