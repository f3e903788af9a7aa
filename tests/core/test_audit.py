from __future__ import annotations

import numpy as np

from sharelearn.core.audit import WireAudit, byte_patterns, scan
from sharelearn.core.codec import encode


def test_audit_finds_ids_features_and_labels_sent_in_the_clear() -> None:
    audit = WireAudit()
    audit.record("bank", "shop", "oops", encode({"ids": ["customer-0042"], "x": np.array([0.123456789])}))
    audit.record("bank", "shop", "ok", encode(np.frombuffer(bytes(range(256)) * 4, dtype=np.uint8)))

    assert audit.count_leaks("shop", ["customer-0042", "customer-0043"]) == 1
    assert audit.count_leaks("shop", [0.123456789]) == 1
    assert audit.count_leaks("bank", ["customer-0042"]) == 0


def test_audit_finds_integers_in_int64_arrays() -> None:
    audit = WireAudit()
    audit.record("a", "b", "t", encode(np.array([5, 123456789012, 7], dtype=np.int64)))

    assert audit.count_leaks("b", [123456789012, 987654321098]) == 1


def test_scan_spans_chunk_boundaries() -> None:
    payload = b"\x00" * ((1 << 20) - 3) + b"SECRET!" + b"\x00" * 10

    assert scan([payload], {b"SECRET!"}) == {b"SECRET!"}


def test_short_values_are_not_searched() -> None:
    assert byte_patterns("ab") == set()


def test_assert_no_leak_names_the_receiver() -> None:
    import pytest

    from sharelearn.testing.leaks import assert_no_leak

    audit = WireAudit()
    audit.record("bank", "shop", "t", encode(["customer-0042"]))

    assert_no_leak(audit, "shop", ["customer-0043"], what="id")
    with pytest.raises(AssertionError, match="1 of 1 raw ids.*'shop'"):
        assert_no_leak(audit, "shop", ["customer-0042"], what="id")
