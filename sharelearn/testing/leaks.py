"""Assertions over a WireAudit: no raw value of one party in what another party received."""

from __future__ import annotations

from collections.abc import Iterable

from sharelearn.core.audit import WireAudit

__all__ = ["assert_no_leak"]


def assert_no_leak(
    audit: WireAudit, receiver: str, secrets: Iterable[object], *, what: str = "value"
) -> None:
    """Fail if any of `secrets` appears in plain form in the bytes `receiver` received."""
    values = list(secrets)
    hits = audit.count_leaks(receiver, values)
    if hits:
        raise AssertionError(f"{hits} of {len(values)} raw {what}s appear in what {receiver!r} received")
