from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sharelearn.core.codec import Limits, decode, encode, expect_array, expect_type
from sharelearn.core.errors import DecodeError

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
