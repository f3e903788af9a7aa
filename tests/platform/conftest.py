from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Platform


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    """A coordinator process (free port, state in tmp_path); every process started is stopped."""
    p = Platform(tmp_path)
    p.start_coordinator()
    try:
        yield p
    finally:
        p.stop()
