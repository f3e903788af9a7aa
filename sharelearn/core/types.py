"""Shared type aliases: party names, roles, array aliases and the wire value type."""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "ROLES",
    "BoolArray",
    "F64Array",
    "I64Array",
    "PartyId",
    "Role",
    "U8Array",
    "U64Array",
    "Wire",
]

PartyId: TypeAlias = str
Role: TypeAlias = Literal["guest", "host", "arbiter", "server", "client", "dealer", "party"]
ROLES: tuple[str, ...] = ("guest", "host", "arbiter", "server", "client", "dealer", "party")

U8Array: TypeAlias = npt.NDArray[np.uint8]
U64Array: TypeAlias = npt.NDArray[np.uint64]
I64Array: TypeAlias = npt.NDArray[np.int64]
F64Array: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

# What the codec can carry: msgpack scalars, bytes, numpy arrays, big integers, and
# lists / string-keyed maps of these.
Wire: TypeAlias = (
    bool | int | float | str | bytes | npt.NDArray[np.generic] | list["Wire"] | dict[str, "Wire"] | None
)
