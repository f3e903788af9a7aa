from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Netns, Platform, netns_available


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    """A coordinator process (free port, state in tmp_path); every process started is stopped."""
    p = Platform(tmp_path)
    p.start_coordinator()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def netns_platform(tmp_path: Path) -> Iterator[Platform]:
    """As `platform`, but each worker in its own network namespace when root and `ip` allow it."""
    netns = Netns() if netns_available() else None
    if netns is None:
        print("WARNING: not root or no `ip`: workers share this namespace on distinct loopback addresses")
    else:
        netns.up()
    p = Platform(tmp_path, netns=netns)
    try:
        p.start_coordinator()
        yield p
    finally:
        p.stop()
