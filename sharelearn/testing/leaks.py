"""Assertions over a WireAudit: no raw value of one party in what another party received."""

from __future__ import annotations

from collections.abc import Iterable

from sharelearn.core.audit import WireAudit

__all__ = ["assert_no_leak"]


def assert_no_leak(
    audit: WireAudit, receiver: str, secrets: Iterable[object], *, what: str = "value"
) -> None:
    """Fail if any of `secrets` appears in plain form in the bytes `receiver` received.

    Also fails when the audit kept only samples of some of those bytes (its `payload_cap`): a
    scan over part of the traffic cannot show that nothing leaked.
    """
    values = list(secrets)
    hits = audit.count_leaks(receiver, values)
    if hits:
        raise AssertionError(f"{hits} of {len(values)} raw {what}s appear in what {receiver!r} received")
    missed = audit.truncated_bytes(receiver)
    if missed:
        raise AssertionError(
            f"the audit kept no copy of {missed:,} bytes {receiver!r} received (payload_cap "
            f"{audit.payload_cap:,} per peer), so it cannot show that no raw {what} leaked; "
            "record the test with WireAudit(payload_cap=None)"
        )
