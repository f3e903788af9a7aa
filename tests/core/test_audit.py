from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import msgpack
import numpy as np

from sharelearn.core.audit import SAMPLE_BYTES, SAMPLE_CAP, WireAudit, byte_patterns, scan
from sharelearn.core.codec import encode
from sharelearn.core.types import Wire


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


def test_audit_file_is_written_atomically_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    audit = WireAudit()
    audit.record("bank", "shop", "t", encode(["customer-0042"]))
    path = tmp_path / "parties" / "shop" / "audit.msgpack"

    audit.save(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["audit.msgpack"]
    assert WireAudit.load(path).count_leaks("shop", ["customer-0042"]) == 1


def test_audit_keeps_payloads_up_to_its_cap_then_a_digest_and_a_sample() -> None:
    audit = WireAudit(payload_cap=1000)
    first, second = b"a" * 600, b"SECRET-ID-" + b"b" * 590

    audit.record("bank", "shop", "t1", first)
    audit.record("bank", "shop", "t2", second)
    audit.record("other", "shop", "t3", first)  # its own cap: another sender

    kept = audit.messages
    assert [m.nbytes for m in kept] == [600, 600, 600] and [m.complete for m in kept] == [True, False, True]
    assert kept[1].digest == hashlib.blake2b(second, digest_size=16).digest()
    assert audit.received("shop")[1] == second[:SAMPLE_BYTES]
    assert audit.truncated_bytes("shop") == 600 - SAMPLE_BYTES and audit.truncated_bytes("bank") == 0
    assert audit.bytes_received("shop") == 1800
    assert audit.count_leaks("shop", ["SECRET-ID-"]) == 1  # the sample is still searched


def test_a_flood_cannot_grow_the_audit_file_past_its_cap(tmp_path: Path) -> None:
    audit = WireAudit(payload_cap=1 << 20)
    junk = bytes(range(256)) * 64  # 16 KiB

    for i in range(2000):  # 32 MiB offered
        audit.record("shop", "bank", f"junk/{i}", junk)
    audit.save(tmp_path / "audit.msgpack")

    size = (tmp_path / "audit.msgpack").stat().st_size
    assert size < (1 << 20) + SAMPLE_CAP + 2000 * 64
    loaded = WireAudit.load(tmp_path / "audit.msgpack")
    assert loaded.bytes_received("bank") == 2000 * len(junk)
    assert loaded.truncated_bytes("bank") == audit.truncated_bytes("bank") > 29 << 20


def test_assert_no_leak_refuses_to_certify_a_truncated_audit() -> None:
    import pytest

    from sharelearn.testing.leaks import assert_no_leak

    audit = WireAudit(payload_cap=100)
    audit.record("bank", "shop", "t", b"\x00" * 50)
    assert_no_leak(audit, "shop", ["customer-0043"], what="id")
    audit.record("bank", "shop", "t", b"\x00" * 1000 + b"customer-0043")

    with pytest.raises(AssertionError, match="no copy of .* bytes 'shop' received.*payload_cap=None"):
        assert_no_leak(audit, "shop", ["customer-0043"], what="id")
    unbounded = WireAudit(payload_cap=None)
    unbounded.record("bank", "shop", "t", b"\x00" * 1000 + b"customer-0043")
    with pytest.raises(AssertionError, match="1 of 1 raw ids"):
        assert_no_leak(unbounded, "shop", ["customer-0043"], what="id")


def test_audit_files_of_the_older_four_field_format_still_load(tmp_path: Path) -> None:
    path = tmp_path / "audit.msgpack"
    path.write_bytes(msgpack.packb([["bank", "shop", "t", encode("customer-0042")]], use_bin_type=True))

    assert WireAudit.load(path).count_leaks("shop", ["customer-0042"]) == 1


def test_sampled_scan_with_time_to_spare_covers_everything_and_finds_the_leak() -> None:
    from sharelearn.core.audit import sample_leaks

    noise = np.random.default_rng(1).integers(0, 256, size=3 << 20, dtype=np.uint8).tobytes()
    payloads = [noise, noise[:1000] + encode(["customer-0042"]) + noise[:1000]]

    found = sample_leaks(payloads, ["customer-0042", "customer-0043"], budget_s=60.0)

    assert (found.leaks, found.scanned, found.total) == (1, len(payloads[0]) + len(payloads[1]), found.total)


def test_sampled_scan_stops_at_its_budget_says_what_it_covered_and_varies_its_sample() -> None:
    from sharelearn.core.audit import sample_leaks

    pieces = [bytes([k]) * (1 << 20) for k in range(8)]
    leak = b"\x07" * 100 + b"customer-0042"  # the leak sits in one of eight 1 MiB pieces
    payloads = [*pieces[:7], leak + pieces[7][len(leak) :]]

    runs = [sample_leaks(payloads, ["customer-0042"], budget_s=0.0) for _ in range(80)]

    assert all(r.scanned == 1 << 20 and r.total == 8 << 20 for r in runs)  # one piece each
    hits = sum(r.leaks for r in runs)
    assert 0 < hits < 80  # a random piece: sometimes the leaky one, never a claim beyond it


def test_scan_agrees_with_a_naive_search_at_every_length_and_position() -> None:
    rng = np.random.default_rng(7)
    data = bytearray(rng.integers(0, 4, size=5000, dtype=np.uint8).tobytes())  # few symbols: many near-hits
    patterns = {
        bytes(data[p : p + n]) for p, n in [(0, 6), (4994, 6), (100, 7), (200, 8), (4987, 13), (3000, 21)]
    }
    patterns |= {
        rng.integers(0, 4, size=n, dtype=np.uint8).tobytes() for n in (6, 7, 8, 9, 13) for _ in range(50)
    }
    patterns |= {b"\x00" * 6, b"ab\x00\x00\x00\x00\x00\x00"}

    found = scan([bytes(data)], patterns)

    assert found == {p for p in patterns if p in bytes(data)}


def test_sampled_scan_draws_at_most_its_quota_of_ids() -> None:
    from sharelearn.core.audit import sample_leaks

    ids = [f"customer-{k:06d}" for k in range(10_000)]
    leaked: list[Wire] = list(ids[:5000])  # half of the ids leak
    payload = encode(leaked)

    found = sample_leaks([payload], ids, budget_s=60.0, max_secrets=200)

    assert (found.checked, found.secrets, found.scanned) == (200, 10_000, len(payload))
    assert 60 < found.leaks < 140  # about half of the 200 drawn
