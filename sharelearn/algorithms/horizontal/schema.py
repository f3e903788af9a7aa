"""Horizontal checks before round 1: every client's columns and label set against the server's spec.

Each client sends the server (in the `info` message, before any training) its feature names in
order, their dtypes, its largest label and, for integer labels, its set of classes. The reference
is the server's test set when it has one, else the first client in job order. A client whose
columns differ (missing, extra, renamed or in another order), whose dtypes differ, or whose labels
fall outside the server's classes fails the job naming the party and the column (DataError, exit
3); so does a class of the server's test set that no client holds.

What the server learns from this: each client's column names and dtypes (the job's schema) and,
for classification, which classes each client holds — not how many rows of each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sharelearn.algorithms.context import Dataset
from sharelearn.core import codec
from sharelearn.core.errors import DataError
from sharelearn.core.types import Wire

__all__ = ["check_classes", "check_columns", "client_info", "parse_info"]

MAX_CLASSES = 1000  # integer labels with more distinct values are sent as no class set


def client_info(data: Dataset, party: str) -> dict[str, Any]:
    """The `info` message of a client: shape, label range, column names and dtypes, class set."""
    if data.y is None:
        raise DataError(f"fedavg: client {party!r} ({data.source}) has no label column")
    y = np.asarray(data.y, dtype=np.float64)
    if len(y) == 0:
        raise DataError(f"fedavg: client {party!r} ({data.source}) has no rows")
    x = np.asarray(data.x)
    integral = bool(np.all(y == np.round(y)) and y.min() >= 0)
    classes = np.unique(y) if integral else np.zeros(0)
    return {
        "n_features": int(x.shape[1]),
        "max_label": float(y.max()),
        "integral": integral,
        "features": list(data.feature_names),
        "dtypes": [str(x.dtype)] * int(x.shape[1]),
        "classes": [float(c) for c in classes] if len(classes) <= MAX_CLASSES else None,
    }


def parse_info(value: Wire, party: str) -> dict[str, Any]:
    """Check the types of a client's `info` message (it comes from a peer)."""
    tag = "info"
    doc = codec.expect_type(value, dict, peer=party, tag=tag)
    for key, kind in (("n_features", int), ("max_label", float), ("integral", bool)):
        codec.expect_type(doc.get(key), kind, peer=party, tag=tag)
    for key in ("features", "dtypes"):
        items = codec.expect_type(doc.get(key), list, peer=party, tag=tag)
        if len(items) != doc["n_features"] or not all(isinstance(s, str) for s in items):
            raise DataError(
                f"fedavg: client {party!r} sent {key} that do not name its {doc['n_features']} columns"
            )
    classes = doc.get("classes")
    if classes is not None:
        items = codec.expect_type(classes, list, peer=party, tag=tag)
        if not all(isinstance(c, float) for c in items) or len(items) > MAX_CLASSES:
            raise DataError(f"fedavg: client {party!r} sent a malformed class set")
    return dict(doc)


def _first_difference(want: Sequence[str], got: Sequence[str]) -> str:
    """The first column that makes `got` differ from `want`, in words."""
    missing = [c for c in want if c not in got]
    extra = [c for c in got if c not in want]
    if missing:
        return f"column {missing[0]!r} is missing"
    if extra:
        return f"column {extra[0]!r} is not there"
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if w != g:
            return f"column {g!r} is at position {i + 1}, where it has {w!r}"
    return "the columns differ"


def check_columns(infos: Mapping[str, Mapping[str, Any]], reference: Sequence[str], source: str) -> None:
    """Each client's feature names, order and dtypes must be the reference's (`source` names it)."""
    for party, info in infos.items():
        got = list(info["features"])
        if got != list(reference):
            raise DataError(
                f"fedavg: client {party!r}'s columns do not match {source}: "
                f"{_first_difference(reference, got)}"
            )
        dtypes = set(info["dtypes"])
        if len(dtypes) != 1 or "float64" not in dtypes:
            bad = next(c for c, d in zip(got, info["dtypes"], strict=True) if d != "float64")
            raise DataError(f"fedavg: client {party!r}'s column {bad!r} is not numeric (float64)")


def check_classes(infos: Mapping[str, Mapping[str, Any]], test: Dataset | None) -> None:
    """Every client's classes among the server's test classes; every test class held by some client.

    Without a labelled test set at the server there is no spec to check the classes against.
    """
    if test is None or test.y is None or not len(test.y):
        return
    allowed = {float(c) for c in np.unique(np.asarray(test.y, dtype=np.float64))}
    source = f"the server's test set ({test.source}) classes {sorted(allowed)}"
    held: set[float] = set()
    for party, info in infos.items():
        classes = info.get("classes")
        if classes is None:
            continue
        held |= set(classes)
        outside = sorted(set(classes) - allowed)
        if outside:
            raise DataError(
                f"fedavg: client {party!r}'s label column has class {outside[0]:g}, not among {source}"
            )
    unseen = sorted(allowed - held)
    if unseen and held:
        raise DataError(
            f"fedavg: class {unseen[0]:g} of the server's test set ({test.source}) is held by no client; "
            "no client can train on it"
        )
