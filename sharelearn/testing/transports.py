"""One test body over both transports: threads on the in-memory link, or processes over gRPC + mTLS.

`run_over("memory", roles)` is `run_roles`; `run_over("grpc", roles)` is `run_roles_grpc` (role
functions must then be importable, e.g. `functools.partial` of a module-level function). Both
return a `RoleRun`: each party's result, `.audit` and `.stats`. The test suite's `run_parties`
fixture is parametrised over `TRANSPORTS`, as CrypTen's `MultiProcessTestCase` runs one body
across its communicators.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

from sharelearn.core.link import Link
from sharelearn.testing.processes import run_roles_grpc
from sharelearn.testing.roles import RoleRun, run_roles

__all__ = ["TRANSPORTS", "Transport", "run_over"]

Transport: TypeAlias = Literal["memory", "grpc"]
TRANSPORTS: tuple[Transport, ...] = ("memory", "grpc")


def run_over(
    transport: Transport, roles: Mapping[str, Callable[[Link], Any]], *, timeout: float = 60.0
) -> RoleRun:
    """Run every role over `transport`; re-raise the first failure as PartyFailed naming the party."""
    if transport == "memory":
        return run_roles(roles, timeout=timeout)
    if transport == "grpc":
        return run_roles_grpc(roles, timeout=timeout)
    raise ValueError(f"unknown transport {transport!r}; expected one of {TRANSPORTS}")
