from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from sharelearn.testing.roles import RoleRun
from sharelearn.testing.transports import run_over

# Jobs the tests run through the CLI get the exhaustive leak check (`--audit full`), not the
# sampled default of `sharelearn run`; the test of the default itself unsets this.
os.environ.setdefault("SHARELEARN_AUDIT", "full")

# Role wrappers for multi-process tests live beside the tests and must be importable by name
# in spawned processes.
for sub in ("operators", "runtime", "integration", "algorithms"):
    path = str(Path(__file__).parent / sub)
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(params=[pytest.param("memory"), pytest.param("grpc", marks=pytest.mark.grpc)])
def run_parties(request: pytest.FixtureRequest) -> Callable[..., RoleRun]:
    """Run a protocol's roles over one transport: the same test body runs over both."""
    return partial(run_over, request.param)
