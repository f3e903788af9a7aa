"""Per-step checks of a job's roles and parties, run when the job is parsed (before any PSI).

Each check gets the job's parties (name -> role, in job order), the parties with data, the step's
parameters object and the names of the steps before it, and raises `ConfigError` naming what is
wrong (the job loader adds the file, the step's key path and its line; the CLI exits 2). The steps
check the same things again when they run: these checks only move the error to parse time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from sharelearn.core.errors import ConfigError

__all__ = ["ROLE_CHECKS", "RoleCheck"]

RoleCheck: TypeAlias = Callable[[Mapping[str, str], Sequence[str], Any, Sequence[str]], None]
# Steps that pair rows across parties by position: psi must have aligned them first.
_ALIGNED_STEPS = ("split", "cross_validate", "hetero_lr", "secureboost", "ss_lr")


def _with(roles: Mapping[str, str], role: str) -> list[str]:
    return [p for p, r in roles.items() if r == role]


def _exactly(step: str, roles: Mapping[str, str], role: str, allowed: tuple[int, ...] = (1,)) -> list[str]:
    found = _with(roles, role)
    if len(found) not in allowed:
        want = " or ".join(map(str, allowed))
        raise ConfigError(f"{step} needs {want} party with role {role}, the job has {found or 'none'}")
    return found


def _have_data(step: str, parties: Sequence[str], data: Sequence[str]) -> None:
    missing = [p for p in parties if p not in data]
    if missing:
        raise ConfigError(f"{step}: parties {missing} have no `data:`")


def _known(step: str, key: str, named: Sequence[str], roles: Mapping[str, str]) -> None:
    unknown = [p for p in named if p not in roles]
    if unknown:
        raise ConfigError(f"{step}.{key}: {unknown} are not parties of the job ({', '.join(roles)})")


def _aligned_first(step: str, data: Sequence[str], earlier: Sequence[str]) -> None:
    if len(data) > 1 and "psi" not in earlier:
        raise ConfigError(f"{step} pairs the rows of {list(data)} by position: put `psi` before it")


def _vertical(step: str, roles: Mapping[str, str], data: Sequence[str]) -> tuple[list[str], list[str]]:
    guests = _exactly(step, roles, "guest")
    hosts = _with(roles, "host")
    if not hosts:
        raise ConfigError(f"{step} needs at least one party with role host, the job has none")
    _have_data(step, [*guests, *hosts], data)
    return guests, hosts


def _check_psi(roles: Mapping[str, str], data: Sequence[str], params: Any, earlier: Sequence[str]) -> None:
    if len(data) < 2:
        raise ConfigError(f"psi needs at least two parties with data, the job has {list(data)}")
    _known("psi", "receivers", getattr(params, "receivers", ()), roles)


def _check_hetero_lr(
    roles: Mapping[str, str], data: Sequence[str], params: Any, earlier: Sequence[str]
) -> None:
    _, hosts = _vertical("hetero_lr", roles, data)
    mode = getattr(params, "mode", "arbiter")
    if mode == "arbiter":
        _exactly("hetero_lr (mode arbiter)", roles, "arbiter")
    elif len(hosts) != 1:
        raise ConfigError(f"hetero_lr mode {mode} supports exactly one host, the job has {hosts}")
    _aligned_first("hetero_lr", data, earlier)


def _check_secureboost(
    roles: Mapping[str, str], data: Sequence[str], params: Any, earlier: Sequence[str]
) -> None:
    _vertical("secureboost", roles, data)
    _aligned_first("secureboost", data, earlier)


def _check_ss_lr(roles: Mapping[str, str], data: Sequence[str], params: Any, earlier: Sequence[str]) -> None:
    guests = _exactly("ss_lr", roles, "guest")
    hosts = _exactly("ss_lr", roles, "host")
    _exactly("ss_lr", roles, "dealer", (0, 1))
    _have_data("ss_lr", [*guests, *hosts], data)
    named = list(getattr(params, "reveal_to", ()))
    _known("ss_lr", "reveal_to", named, roles)
    if outside := [p for p in named if p not in (*guests, *hosts)]:
        raise ConfigError(f"ss_lr.reveal_to: {outside} are not the guest or the host of this job")
    _aligned_first("ss_lr", data, earlier)


def _check_fedavg(roles: Mapping[str, str], data: Sequence[str], params: Any, earlier: Sequence[str]) -> None:
    _exactly("fedavg", roles, "server")
    if not _with(roles, "client") and getattr(params, "compute", "local") != "ray":
        raise ConfigError("fedavg needs at least one party with role client (or simulation: {compute: ray})")
    if vertical := [p for p in roles if roles[p] in ("guest", "host")]:
        raise ConfigError(f"fedavg runs between a server and clients; {vertical} have vertical roles")


def _check_split(roles: Mapping[str, str], data: Sequence[str], params: Any, earlier: Sequence[str]) -> None:
    if any(roles[p] in ("guest", "host") for p in data):
        _aligned_first("split", data, earlier)


def _check_cross_validate(
    roles: Mapping[str, str], data: Sequence[str], params: Any, earlier: Sequence[str]
) -> None:
    inner = ROLE_CHECKS.get(str(getattr(params, "step", "")))
    if inner is not None:
        inner(roles, data, getattr(params, "params", None), earlier)


ROLE_CHECKS: dict[str, RoleCheck] = {
    "psi": _check_psi,
    "split": _check_split,
    "cross_validate": _check_cross_validate,
    "hetero_lr": _check_hetero_lr,
    "secureboost": _check_secureboost,
    "ss_lr": _check_ss_lr,
    "fedavg": _check_fedavg,
}
