from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sharelearn.core import msgsize
from sharelearn.core.codec import Limits, decode, encode, expect_array, expect_type
from sharelearn.core.errors import DecodeError
from sharelearn.core.msgsize import check_decoded_size

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**300), 2**300)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int64, np.uint64, np.float64, np.float32, np.bool_, np.int32]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
)
values = st.recursive(
    scalars | arrays,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=True)
        )
    if isinstance(a, list):
        return (
            isinstance(b, list) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@settings(max_examples=200, deadline=None)
@given(values)
def test_codec_round_trips_every_wire_value(value: object) -> None:
    assert _equal(decode(encode(value)), value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 3)),
        np.zeros((3, 0), np.uint8),
        np.array(7, np.int64),
        np.arange(12, dtype=np.float32).reshape(3, 4).T,  # Fortran order
        np.arange(20, dtype=np.uint64)[::3],  # strided
        np.arange(6, dtype=">i4"),  # big-endian: arrives little-endian
    ],
)
def test_codec_round_trips_arrays_of_any_layout(array: np.ndarray) -> None:
    got = decode(encode([array]))

    assert isinstance(got, list) and isinstance(got[0], np.ndarray)
    assert got[0].dtype == array.dtype.newbyteorder("<") and got[0].shape == array.shape
    assert np.array_equal(got[0], array)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_codec_rejects_garbage_with_decode_error_or_decodes_plain_value(data: bytes) -> None:
    try:
        decode(data, peer="host", tag="t")
    except DecodeError as exc:
        assert "host" in str(exc) and "'t'" in str(exc)


def test_codec_never_carries_objects() -> None:
    with pytest.raises(TypeError):
        encode(np.array([object()], dtype=object))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode({"f": lambda: 1})  # type: ignore[dict-item]


def _ndarray_ext(dtype: str, shape: list[int], body: bytes) -> bytes:
    header = msgpack.packb([dtype, shape])
    return msgpack.packb(msgpack.ExtType(1, len(header).to_bytes(4, "little") + header + body))


@pytest.mark.parametrize(
    ("dtype", "shape", "body", "why"),
    [
        ("|O", [1], b"\x00" * 8, "not allowed"),
        ("<U4", [1], b"\x00" * 16, "not allowed"),
        ("<f8", [3], b"\x00" * 16, "need 24"),
        ("<f8", [-1], b"", "negative"),
        ("<u8", [1 << 40, 1 << 40], b"", "oversized"),
        ("<u8", [1 << 20, 1 << 20], b"", "exceeds"),
    ],
)
def test_codec_rejects_malformed_arrays_before_allocating(
    dtype: str, shape: list[int], body: bytes, why: str
) -> None:
    with pytest.raises(DecodeError, match=why):
        decode(_ndarray_ext(dtype, shape, body), peer="shop", tag="grad")


def test_codec_enforces_message_and_bigint_limits() -> None:
    limits = Limits(max_message_bytes=100, max_bigint_bytes=8)
    with pytest.raises(DecodeError, match="over the limit"):
        decode(encode(b"x" * 200), peer="p", tag="t", limits=limits)
    with pytest.raises(DecodeError, match="big integer"):
        decode(encode(2**100), peer="p", tag="t", limits=limits)
    with pytest.raises(DecodeError, match="unknown extension"):
        decode(msgpack.packb(msgpack.ExtType(9, b"x")), peer="p", tag="t")


def test_expect_helpers_name_peer_and_tag() -> None:
    with pytest.raises(DecodeError, match=r"'u'.*'bank'.*uint8"):
        expect_array(np.zeros(3, np.int64), peer="bank", tag="u", dtype=np.uint8)
    with pytest.raises(DecodeError, match="shape"):
        expect_array(np.zeros((3, 2), np.uint8), peer="bank", tag="u", dtype=np.uint8, shape=(None, 32))
    with pytest.raises(DecodeError, match="expected int"):
        expect_type(True, int, peer="bank", tag="n")
    assert expect_type(5, int, peer="bank", tag="n") == 5


def _array_of(unit: bytes, elements_per_unit: int, total_bytes: int) -> bytes:
    units = total_bytes // len(unit)
    return b"\xdd" + (units * elements_per_unit).to_bytes(4, "big") + unit * units


def test_sixteen_mib_of_empty_lists_is_refused_before_it_expands() -> None:
    # One byte each on the wire, ~64 bytes each decoded: the issue measured +1,155 MiB (72x).
    data = _array_of(b"\x90", 1, 16 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=r"'flood' from 'shop'.*decodes to more than") as info:
            decode(data, peer="shop", tag="flood")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert info.value.peer == "shop" and info.value.tag == "flood"
    assert peak < 32 << 20, f"refusing the message allocated {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("unit", "elements"),
    [
        (b"\x90", 1),  # empty lists
        (b"\x80", 1),  # empty maps
        (b"\x91\x90", 1),  # nested singletons: no run to measure in bulk
        (b"\x92\x90\x80", 1),
        (b"\x81\xa1k\x80", 1),  # maps of maps
        (b"\xe0", 1),  # -32: an int outside the small-int cache
        (b"\x90\xcc\x01", 2),  # mixed kinds, so runs keep breaking
        (b"\xa2ab", 1),  # short strings
        (b"\xa2\xc3\xa9", 1),  # short non-ascii strings
        (b"\xd1\x01\x00", 1),  # int16
        (b"\xcb" + b"\x00" * 8, 1),  # float64
    ],
)
def test_every_kind_of_object_counts_against_the_decoded_budget(unit: bytes, elements: int) -> None:
    data = _array_of(unit, elements, 100_000)
    tight = Limits(max_expansion=2.0, expansion_allowance=1024)

    with pytest.raises(DecodeError, match="decodes to more than"):
        decode(data, peer="p", tag="t", limits=tight)
    assert isinstance(decode(data, limits=Limits(max_expansion=300.0)), list)


@pytest.mark.parametrize(
    "value",
    [
        [0.5] * 20_000,
        list(range(1000, 21_000)),
        [-20] * 20_000,
        [f"id{i}" for i in range(20_000)],
        [f"é€{i}😀" for i in range(10_000)],
        [f"customer-{i:07d}" for i in range(20_000)],
        [f"é{i:05d}" for i in range(20_000)],
        [[i, -i] for i in range(1000, 11_000)],
        [{"a": i, "b": [i]} for i in range(5000)],
        [[] for _ in range(10_000)] + [{} for _ in range(10_000)],
        [2**200 + i for i in range(2000)],
        {"w": np.zeros(1000), "xs": [np.arange(5) for _ in range(2000)], "blob": b"x" * 100_000},
        [bytes([i % 256]) * 3 for i in range(20_000)],
    ],
    ids=[
        "floats",
        "ints",
        "negative",
        "ids",
        "unicode",
        "same-length-ids",
        "same-length-unicode",
        "pairs",
        "dicts",
        "empty",
        "bigint",
        "arrays",
        "bin",
    ],
)
def test_decoded_size_estimate_covers_what_decoding_keeps(value: object) -> None:
    data = encode(value)  # type: ignore[arg-type]
    estimate = check_decoded_size(data, 1 << 40)

    tracemalloc.start()
    try:
        decoded = decode(data, limits=Limits(max_expansion=1000.0))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert decoded is not None
    assert held <= estimate + 8192, f"decoding kept {held:,} bytes, estimated {estimate:,}"


def test_ordinary_large_messages_fit_the_default_budget() -> None:
    values = [
        [0.25] * 500_000,  # 4.5 MB of floats
        [f"customer-{i:07d}" for i in range(200_000)],  # 3.4 MB of ids
        {"ct": b"\x01" * (16 << 20), "shape": [4096, 8], "frac_bits": 16},
        np.zeros(2 << 20),
    ]
    for value in values:
        assert decode(encode(value)) is not None  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(values)
def test_size_walk_accepts_every_wire_value(value: object) -> None:
    # A zero allowance makes every message go through the walk.
    walked = Limits(max_expansion=1000.0, expansion_allowance=1)

    assert _equal(decode(encode(value), limits=walked), value)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_size_walk_rejects_garbage_with_decode_error_only(data: bytes) -> None:
    try:
        decode(data, peer="host", tag="t", limits=Limits(max_expansion=1000.0, expansion_allowance=1))
    except DecodeError as exc:
        assert "host" in str(exc)


def test_size_walk_refuses_deep_nesting_and_truncation() -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        check_decoded_size(b"\x91" * 5000 + b"\xc0", 1 << 40)
    with pytest.raises(ValueError, match="truncated"):
        check_decoded_size(b"\xdc\x00\x05\x01\x02", 1 << 40)
    with pytest.raises(DecodeError, match="'t' from 'p' is malformed"):
        decode(b"\x91" * 5000 + b"\xc0", peer="p", tag="t")


run_elements = st.one_of(
    st.lists(st.integers(-40, 300), min_size=8, max_size=300),
    st.lists(st.integers(-(2**63), 2**64 - 1), min_size=8, max_size=300),
    st.lists(st.floats(allow_nan=False), min_size=8, max_size=300),
    st.lists(st.sampled_from([None, True, False, [], {}, ""]), min_size=8, max_size=300),
    st.integers(1, 12).flatmap(
        lambda n: st.lists(st.text(alphabet="abcé€😀", min_size=n, max_size=n), min_size=8, max_size=200)
    ),
    st.lists(st.integers(2**100, 2**100 + 1000), min_size=8, max_size=100),
    st.lists(st.one_of(st.integers(-40, 40), st.floats(allow_nan=False), st.text(max_size=3)), min_size=8),
)


@settings(max_examples=300, deadline=None)
@given(run_elements)
def test_bulk_measured_runs_price_exactly_what_the_element_walk_prices(value: list[object]) -> None:
    data = encode(value)  # type: ignore[arg-type]
    with_runs = check_decoded_size(data, 1 << 40)

    runs = msgsize._RUNS
    msgsize._RUNS = frozenset()  # every element through the one-at-a-time walk
    try:
        one_by_one = check_decoded_size(data, 1 << 40)
    finally:
        msgsize._RUNS = runs

    assert with_runs == one_by_one
