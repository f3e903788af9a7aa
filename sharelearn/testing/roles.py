"""run_roles(): every role of a protocol in its own thread over a fresh MemNetwork."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from sharelearn.core.audit import WireAudit
from sharelearn.core.errors import PartyFailed
from sharelearn.core.link import Link
from sharelearn.core.memlink import MemNetwork

__all__ = ["RoleRun", "run_roles"]


class RoleRun(dict[str, Any]):
    """Each party's return value, plus the network's audit and per-party link stats."""

    audit: WireAudit
    stats: dict[str, dict[str, int]]


def run_roles(
    roles: Mapping[str, Callable[[Link], Any]],
    *,
    timeout: float = 60.0,
    audit: WireAudit | None = None,
) -> RoleRun:
    """Run `roles[party](link)` for every party in a thread; re-raise a failure with the party's name.

    When one party raises, the others are woken (their pending receives fail naming it), and the
    first failure is raised as `PartyFailed(party, ...)` chained to the original exception.
    """
    net = MemNetwork(list(roles), audit=audit, timeout=timeout)
    results = RoleRun()
    failures: list[tuple[str, BaseException]] = []

    def body(party: str, fn: Callable[[Link], Any]) -> None:
        try:
            results[party] = fn(net.link(party))
        except BaseException as exc:  # collected and re-raised in the caller
            failures.append((party, exc))
            net.fail(party, f"{type(exc).__name__}: {exc}")

    threads = [
        threading.Thread(target=body, args=(p, fn), name=f"role-{p}", daemon=True) for p, fn in roles.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 4)
    if any(t.is_alive() for t in threads):
        raise PartyFailed(
            ",".join(t.name for t in threads if t.is_alive()), "still running after the deadline"
        )
    if failures:
        party, exc = failures[0]
        raise PartyFailed(party, f"{type(exc).__name__}: {exc}") from exc
    results.audit = net.audit
    results.stats = {p: net.link(p).stats.as_dict() for p in roles}
    return results
