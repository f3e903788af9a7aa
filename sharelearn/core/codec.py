"""The wire codec: msgpack with an explicit schema for numpy arrays and big integers.

Nothing is ever pickled. A numpy array travels as (dtype, shape, raw little-endian bytes);
only plain numeric and boolean dtypes are accepted. Integers beyond 64 bits travel as sign and
magnitude bytes. Every size is checked against `Limits` *before* anything is allocated, and every
failure raises `DecodeError` naming the peer and the message tag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import ConfigError, DecodeError
from sharelearn.core.msgsize import MAX_COST_PER_BYTE, DecodedSizeExceeded, check_decoded_size
from sharelearn.core.types import Wire

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_LIMITS",
    "Limits",
    "decode",
    "decoded_budget",
    "encode",
    "expect_array",
    "expect_type",
]

_EXT_NDARRAY = 1
_EXT_BIGINT = 2

# Little-endian plain numeric dtypes only: no objects, no strings, no structured records.
ALLOWED_DTYPES: frozenset[str] = frozenset(
    ["|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8"]
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds a receiver enforces on what one peer sends, checked before allocating.

    Attributes:
        max_message_bytes: size of one encoded message.
        max_array_bytes: payload of one numpy array.
        max_ndim: dimensions of one numpy array.
        max_items: length of one list or map, and of one str / bytes value.
        max_bigint_bytes: magnitude of one big integer (64 KiB = 524,288 bits).
        max_expansion: the decoded objects of a message may take at most this many times its size
            in memory (plus `expansion_allowance`); counted over the whole object graph.
        expansion_allowance: bytes of decoded objects allowed on top, so small structured messages
            (a config dict, a list of ids) are never refused.
        max_queued_bytes: per peer, bytes received and not yet read (a message into an empty queue
            is always accepted, so one message may be up to `max_message_bytes`).
        max_queued_messages: per peer, messages received and not yet read.
        max_unread_tags: per peer, distinct tags with a message waiting to be read.
    """

    max_message_bytes: int = 1 << 30
    max_array_bytes: int = 1 << 30
    max_ndim: int = 8
    max_items: int = 1 << 26
    max_bigint_bytes: int = 1 << 16
    # 8x: a list of floats decodes to ~3.6x its msgpack size, a list of 6-byte strings to ~7x;
    # bulk numbers travel as arrays (1x). Empty lists (72x) are what an attacker would send.
    max_expansion: float = 8.0
    expansion_allowance: int = 16 << 20
    # A few hundred MiB: room for a party that streams many batches before its peer reads them,
    # small enough that one peer cannot exhaust a worker's memory.
    max_queued_bytes: int = 512 << 20
    max_queued_messages: int = 1 << 16
    max_unread_tags: int = 4096

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not value > 0:
                raise ConfigError(f"link limit {spec.name} must be positive, got {value!r}")


DEFAULT_LIMITS = Limits()


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = obj
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise TypeError(f"numpy dtype {obj.dtype} cannot be sent; allowed: {sorted(ALLOWED_DTYPES)}")
        header = msgpack.packb([arr.dtype.str, list(arr.shape)])
        # One copy of the array's bytes into the ExtType (join reads the buffer directly), not two.
        body = np.ascontiguousarray(arr).data.cast("B") if arr.size else b""
        return msgpack.ExtType(_EXT_NDARRAY, b"".join((len(header).to_bytes(4, "little"), header, body)))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, int):  # only reached for ints outside the 64-bit msgpack range
        sign = b"\x01" if obj < 0 else b"\x00"
        mag = abs(obj)
        return msgpack.ExtType(_EXT_BIGINT, sign + mag.to_bytes((mag.bit_length() + 7) // 8 or 1, "big"))
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"type {type(obj).__name__} cannot be sent over the wire")


def encode(value: Wire) -> bytes:
    """Encode a wire value to bytes.

    Raises:
        TypeError: the value holds a type the schema does not carry (objects, strings in arrays...).
    """
    out: bytes = msgpack.packb(value, default=_default, use_bin_type=True, strict_types=False)
    return out


def _decode_ndarray(data: bytes, limits: Limits) -> np.ndarray[Any, Any]:
    if len(data) < 4:
        raise ValueError("array header is truncated")
    hlen = int.from_bytes(data[:4], "little")
    if hlen > 4096 or 4 + hlen > len(data):
        raise ValueError("array header length is out of range")
    header = msgpack.unpackb(data[4 : 4 + hlen], max_array_len=limits.max_ndim + 1, max_str_len=16)
    if not (isinstance(header, list) and len(header) == 2 and isinstance(header[0], str)):
        raise ValueError("array header is not [dtype, shape]")
    dtype_str, shape = header
    if dtype_str not in ALLOWED_DTYPES:
        raise ValueError(f"array dtype {dtype_str!r} is not allowed")
    if not isinstance(shape, list) or len(shape) > limits.max_ndim:
        raise ValueError("array shape is not a list of at most max_ndim sizes")
    if not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= limits.max_array_bytes for s in shape
    ):
        raise ValueError(f"array shape {shape!r} has a negative, oversized or non-integer size")
    dtype = np.dtype(dtype_str)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limits.max_array_bytes:
        raise ValueError(f"array of {nbytes} bytes exceeds the limit of {limits.max_array_bytes}")
    body = memoryview(data)[4 + hlen :]
    if len(body) != nbytes:
        raise ValueError(
            f"array body has {len(body)} bytes, shape {shape} and dtype {dtype_str} need {nbytes}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def _decode_bigint(data: bytes, limits: Limits) -> int:
    if len(data) < 2 or data[0] not in (0, 1):
        raise ValueError("big integer is malformed")
    if len(data) - 1 > limits.max_bigint_bytes:
        raise ValueError(f"big integer of {len(data) - 1} bytes exceeds {limits.max_bigint_bytes}")
    mag = int.from_bytes(data[1:], "big")
    return -mag if data[0] == 1 else mag


def decoded_budget(nbytes: int, limits: Limits = DEFAULT_LIMITS) -> int:
    """Bytes of decoded objects a message of `nbytes` may take (`max_expansion`x plus allowance)."""
    return int(limits.max_expansion * nbytes) + limits.expansion_allowance


def _check_expansion(data: bytes, peer: str, tag: str, limits: Limits) -> None:
    budget = decoded_budget(len(data), limits)
    if len(data) * MAX_COST_PER_BYTE <= budget:
        return  # too small to exceed the budget whatever it holds
    try:
        check_decoded_size(data, budget)
    except DecodedSizeExceeded as exc:
        raise DecodeError(
            f"message {tag!r} from {peer!r} ({len(data):,} bytes) {exc}: more than "
            f"{limits.max_expansion:g}x its size plus {limits.expansion_allowance:,} "
            "(Limits.max_expansion); bulk numbers must travel as numpy arrays",
            peer=peer,
            tag=tag,
        ) from exc
    except (ValueError, IndexError) as exc:
        raise DecodeError(f"message {tag!r} from {peer!r} is malformed: {exc}", peer=peer, tag=tag) from exc


def decode(data: bytes, *, peer: str = "?", tag: str = "?", limits: Limits = DEFAULT_LIMITS) -> Wire:
    """Decode bytes produced by `encode`, enforcing `limits` before allocating.

    The whole decoded object graph is bounded: `msgsize.check_decoded_size` walks the message and
    refuses it when its objects would take more than `decoded_budget(len(data))` bytes.

    Raises:
        DecodeError: the message is malformed, oversized, or holds a type outside the schema.
    """
    if len(data) > limits.max_message_bytes:
        raise DecodeError(
            f"message {tag!r} from {peer!r} has {len(data)} bytes, over the limit of "
            f"{limits.max_message_bytes}",
            peer=peer,
            tag=tag,
        )
    _check_expansion(data, peer, tag, limits)
    return _unpack(data, peer, tag, limits)


def _unpack(data: bytes, peer: str, tag: str, limits: Limits) -> Wire:
    """msgpack's C unpacker with the schema's extension types and per-container limits."""

    def ext_hook(code: int, payload: bytes) -> Any:
        if code == _EXT_NDARRAY:
            return _decode_ndarray(payload, limits)
        if code == _EXT_BIGINT:
            return _decode_bigint(payload, limits)
        raise ValueError(f"unknown extension type {code}")

    # Every element takes at least one byte, so no container can be longer than the message.
    items = min(limits.max_items, len(data))
    try:
        return msgpack.unpackb(  # type: ignore[no-any-return]
            data,
            ext_hook=ext_hook,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=items,
            max_bin_len=limits.max_message_bytes,
            max_array_len=items,
            max_map_len=items,
            max_ext_len=limits.max_message_bytes,
        )
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise DecodeError(f"message {tag!r} from {peer!r} is malformed: {exc}", peer=peer, tag=tag) from exc


def expect_array(
    value: Wire,
    *,
    peer: str,
    tag: str,
    dtype: npt.DTypeLike,
    shape: tuple[int | None, ...] | None = None,
) -> np.ndarray[Any, Any]:
    """Check that a received value is an array of `dtype` and `shape` (None = any size).

    Raises:
        DecodeError: naming the peer and the tag.
    """
    want = np.dtype(dtype)
    if not isinstance(value, np.ndarray) or value.dtype != want:
        got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise DecodeError(
            f"message {tag!r} from {peer!r}: expected a {want} array, got {got}", peer=peer, tag=tag
        )
    if shape is not None and (
        value.ndim != len(shape)
        or any(w is not None and w != s for w, s in zip(shape, value.shape, strict=True))
    ):
        raise DecodeError(
            f"message {tag!r} from {peer!r}: expected shape {shape}, got {value.shape}", peer=peer, tag=tag
        )
    return value


def expect_type(value: Wire, kind: type[Any] | tuple[type[Any], ...], *, peer: str, tag: str) -> Any:
    """Check that a received value is an instance of `kind` (bool is not accepted as int)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise DecodeError(
            f"message {tag!r} from {peer!r}: expected {'/'.join(k.__name__ for k in kinds)}, "
            f"got {type(value).__name__}",
            peer=peer,
            tag=tag,
        )
    return value
