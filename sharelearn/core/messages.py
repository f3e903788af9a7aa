"""Typed protocol messages: frozen dataclasses with a tag, encoded and checked in one place.

A protocol declares each of its messages once, next to its role functions::

    @dataclass(frozen=True, slots=True)
    class PartialScores(Message):
        TAG: ClassVar[str] = "partial_scores"
        u: np.ndarray = field(metadata=array(np.float64, ndim=1))
        epoch: int

    send(link, guest, PartialScores(u, epoch))
    msg = recv(link, host, PartialScores)          # checked: a DecodeError names peer, tag, field

On the wire a message is a map of field name -> value through `core.codec`. Decoding checks every
field against its annotation (int, float, bool, str, bytes, Literal, arrays with the dtype and
dimensions of their `array(...)` metadata, lists/tuples/maps of these, optional values, nested
messages) before the protocol sees it, so a role function never handles a malformed value. A
field whose type needs context to decode (ciphertexts need their public key) is decoded by a
function the receiver passes in `decoders`, keyed by that type; any other type with a
`from_wire(value)` classmethod decodes itself.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError, DecodeError
from sharelearn.core.link import Link
from sharelearn.core.types import PartyId, Wire

__all__ = ["Decoders", "Message", "array", "recv", "send"]

M = TypeVar("M", bound="Message")
Decoders = Mapping[type, Callable[[Wire], Any]]
_ARRAY = "sharelearn.array"


@dataclasses.dataclass(frozen=True, slots=True)
class _ArraySpec:
    dtype: np.dtype[Any]
    ndim: int | None
    shape: tuple[int | None, ...] | None

    def check(self, value: Wire, where: str) -> np.ndarray[Any, Any]:
        if not isinstance(value, np.ndarray) or value.dtype != self.dtype:
            got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"{where}: expected a {self.dtype} array, got {got}")
        if self.ndim is not None and value.ndim != self.ndim:
            raise ValueError(f"{where}: expected {self.ndim} dimension(s), got shape {value.shape}")
        if self.shape is not None and (
            value.ndim != len(self.shape)
            or any(w is not None and w != s for w, s in zip(self.shape, value.shape, strict=True))
        ):
            raise ValueError(f"{where}: expected shape {self.shape}, got {value.shape}")
        return value


def array(
    dtype: npt.DTypeLike, *, ndim: int | None = None, shape: tuple[int | None, ...] | None = None
) -> dict[str, Any]:
    """Field metadata of an array field: its dtype and, optionally, its dimensions or shape."""
    return {_ARRAY: _ArraySpec(np.dtype(dtype), ndim, shape)}


class Message:
    """Base of protocol messages (subclasses are frozen, slotted dataclasses with a `TAG`)."""

    __slots__ = ()
    TAG: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Wire]:
        """The message as a map of field name -> wire value."""
        return {f.name: _to_wire(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_wire(
        cls: type[M], value: Wire, *, peer: str, tag: str | None = None, decoders: Decoders | None = None
    ) -> M:
        """Check and decode a received map; raise DecodeError naming peer, tag and field."""
        where_tag = tag or cls.TAG
        if not isinstance(value, dict):
            raise DecodeError(
                f"message {where_tag!r} from {peer!r}: expected a map of fields, got {type(value).__name__}",
                peer=peer,
                tag=where_tag,
            )
        spec = _fields(cls)  # type: ignore[arg-type]
        unknown = sorted(set(value) - set(spec))
        missing = sorted(n for n, (_, _, required) in spec.items() if required and n not in value)
        if unknown or missing:
            raise DecodeError(
                f"message {where_tag!r} from {peer!r}: unknown fields {unknown}, missing fields {missing}",
                peer=peer,
                tag=where_tag,
            )
        kwargs: dict[str, Any] = {}
        for name, (hint, meta, _) in spec.items():
            if name in value:
                try:
                    kwargs[name] = _from_wire(value[name], hint, meta, name, decoders or {})
                except (ValueError, TypeError, DecodeError, CryptoError) as exc:
                    raise DecodeError(
                        f"message {where_tag!r} from {peer!r}: field {exc}", peer=peer, tag=where_tag
                    ) from exc
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:  # a __post_init__ check of the message itself
            raise DecodeError(
                f"message {where_tag!r} from {peer!r}: {exc}", peer=peer, tag=where_tag
            ) from exc


def send(link: Link, peer: PartyId, message: Message, *, tag: str | None = None) -> None:
    """Send `message` to `peer` under its TAG (or `tag`)."""
    link.send(peer, tag or message.TAG, message.to_wire())


def recv(
    link: Link,
    peer: PartyId,
    kind: type[M],
    *,
    tag: str | None = None,
    timeout: float | None = None,
    decoders: Decoders | None = None,
) -> M:
    """Receive a `kind` message from `peer` (under `kind.TAG` or `tag`), checked field by field."""
    used = tag or kind.TAG
    return kind.from_wire(link.recv(peer, used, timeout=timeout), peer=peer, tag=used, decoders=decoders)


@functools.cache
def _fields(cls: type[Any]) -> dict[str, tuple[Any, Mapping[str, Any], bool]]:
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[Any, Mapping[str, Any], bool]] = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out[f.name] = (hints[f.name], f.metadata, required)
    return out


def _to_wire(value: Any) -> Wire:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, tuple | list):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_wire(v) for k, v in value.items()}
    to_wire = getattr(value, "to_wire", None)
    if callable(to_wire):
        return to_wire()  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def _from_wire(value: Wire, hint: Any, meta: Mapping[str, Any], where: str, decoders: Decoders) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _ARRAY in meta and origin not in (types.UnionType, typing.Union):
        return meta[_ARRAY].check(value, where)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{where}: message fields may only be `T | None` unions")
        return _from_wire(value, inner[0], meta, where, decoders)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_from_wire(v, item, {}, f"{where}[{i}]", decoders) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a map, got {type(value).__name__}")
        entry = args[1] if len(args) == 2 else Any
        return {k: _from_wire(v, entry, {}, f"{where}.{k}", decoders) for k, v in value.items()}
    return _scalar(value, hint, where, decoders)


def _scalar(value: Wire, hint: Any, where: str, decoders: Decoders) -> Any:
    if hint is Any:
        return value
    if hint is np.ndarray:  # an array field without `array(...)` metadata: any dtype, any shape
        if isinstance(value, np.ndarray):
            return value
        raise ValueError(f"{where}: expected an array, got {type(value).__name__}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    if hint in (int, bool, str, bytes):
        if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
            return value
        raise ValueError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    if isinstance(hint, type) and issubclass(hint, Message):
        return hint.from_wire(value, peer="", tag=where, decoders=decoders)
    if hint in decoders:
        return decoders[hint](value)
    from_wire = getattr(hint, "from_wire", None)
    if callable(from_wire):
        return from_wire(value)
    raise TypeError(f"{where}: no decoder for {hint!r}; pass one in `decoders`")
