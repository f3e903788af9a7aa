"""Where the tests find the data sets they need, looked up from inside the repository.

Most tests build their data from scikit-learn's bundled sets (`sklearn.datasets.load_*`), which
ship with scikit-learn. The FATE example tables (`breast_hetero_guest.csv`, ...) are too large to
copy into the repository; they are looked up, in this order, in

1. `$SHARELEARN_TEST_DATA/fate/` (point it at any folder holding the FATE CSVs),
2. `tests/data/fate/` (not tracked: copy them there with
   `mkdir -p tests/data/fate && cp ../shared/datasets/fate/*.csv tests/data/fate/`),
3. `../shared/datasets/fate/` beside the checkout (the workplace's shared copy).

A test that needs a table none of them has is skipped with that instruction, never failed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["FATE_DIRS", "fate_dir", "fate_file"]

_REPO = Path(__file__).resolve().parents[1]
FATE_DIRS = tuple(
    p
    for p in (
        Path(os.environ["SHARELEARN_TEST_DATA"]) / "fate" if os.environ.get("SHARELEARN_TEST_DATA") else None,
        _REPO / "tests" / "data" / "fate",
        _REPO.parent / "shared" / "datasets" / "fate",
    )
    if p is not None
)
_HOW = (
    "set SHARELEARN_TEST_DATA to a folder with fate/*.csv, or run "
    "`mkdir -p tests/data/fate && cp ../shared/datasets/fate/*.csv tests/data/fate/`"
)


def fate_dir(needs: str = "breast_hetero_guest.csv") -> Path:
    """The first FATE folder that holds `needs`; skips the calling test when none does."""
    for folder in FATE_DIRS:
        if (folder / needs).is_file():
            return folder
    pytest.skip(f"FATE table {needs!r} not found in {[str(d) for d in FATE_DIRS]}: {_HOW}")


def fate_file(name: str) -> Path:
    """The path of one FATE table; skips the calling test when it is nowhere to be found."""
    return fate_dir(name) / name
