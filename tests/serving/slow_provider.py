"""A plug-in feature provider (`py:slow_provider:make`) that answers after a delay: a slow host."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from sharelearn.runtime.serving.providers import TableProvider


class SlowProvider:
    def __init__(self, table: TableProvider, delay: float) -> None:
        self.table, self.delay = table, delay

    @property
    def columns(self) -> tuple[str, ...]:
        return self.table.columns

    def lookup(self, ids: Sequence[str], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.delay)
        return self.table.lookup(ids, names)


def make() -> SlowProvider:
    return SlowProvider(
        TableProvider(os.environ["SLOW_PROVIDER_CSV"]), float(os.environ["SLOW_PROVIDER_DELAY"])
    )
