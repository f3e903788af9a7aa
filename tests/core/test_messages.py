"""Typed protocol messages: round trips, and every malformed field refused naming peer, tag, field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import pytest

from sharelearn.core.errors import DecodeError
from sharelearn.core.link import Link
from sharelearn.core.messages import Message, array, recv, send
from sharelearn.testing.roles import run_roles


@dataclass(frozen=True, slots=True)
class Inner(Message):
    TAG: ClassVar[str] = "inner"
    name: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Scores(Message):
    TAG: ClassVar[str] = "scores"
    u: np.ndarray = field(metadata=array(np.float64, ndim=1))
    epoch: int
    mode: Literal["train", "predict"]
    ids: tuple[str, ...] = ()
    inner: Inner | None = None
    extra: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {self.epoch}")


def _wire(**changes: object) -> dict[str, object]:
    good = Scores(np.arange(3.0), 2, "train", ("a", "b"), Inner("x"), {"k": 1}).to_wire()
    return {**good, **changes}


def test_a_message_survives_the_in_memory_link_unchanged() -> None:
    sent = Scores(np.arange(4.0), 7, "predict", ("a",), Inner("w", 0.5), {"n": 3})

    def host(link: Link) -> None:
        send(link, "guest", sent)

    def guest(link: Link) -> Scores:
        return recv(link, "host", Scores)

    got = run_roles({"host": host, "guest": guest})["guest"]

    np.testing.assert_array_equal(got.u, sent.u)
    assert (got.epoch, got.mode, got.ids, got.inner, got.extra) == (
        7,
        "predict",
        ("a",),
        Inner("w", 0.5),
        {"n": 3},
    )


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"u": np.arange(3, dtype=np.int64)}, "u"),  # wrong dtype
        ({"u": np.zeros((2, 2))}, "u"),  # wrong dimensions
        ({"u": [1.0, 2.0]}, "u"),  # not an array
        ({"epoch": 2.5}, "epoch"),
        ({"epoch": True}, "epoch"),  # a bool is not an int
        ({"mode": "eval"}, "mode"),
        ({"ids": ["a", 3]}, "ids[1]"),
        ({"inner": {"name": 5}}, "inner"),
        ({"extra": {"k": "v"}}, "extra.k"),
        ({"epoch": -1}, "epoch must be >= 0"),  # the message's own check
    ],
)
def test_malformed_fields_are_refused_naming_peer_tag_and_field(
    changes: dict[str, object], field_name: str
) -> None:
    with pytest.raises(DecodeError) as err:
        Scores.from_wire(_wire(**changes), peer="shop")

    assert "'shop'" in str(err.value) and "'scores'" in str(err.value) and field_name in str(err.value)
    assert err.value.peer == "shop" and err.value.tag == "scores"


def test_unknown_and_missing_fields_are_refused() -> None:
    wire = _wire(smuggled=b"x")
    del wire["epoch"]

    with pytest.raises(DecodeError, match=r"unknown fields \['smuggled'\], missing fields \['epoch'\]"):
        Scores.from_wire(wire, peer="shop")
    with pytest.raises(DecodeError, match="expected a map"):
        Scores.from_wire([1, 2], peer="shop")


class Token:
    """A value that needs context to decode (as ciphertexts need their key)."""

    def __init__(self, v: int) -> None:
        self.v = v

    def to_wire(self) -> int:
        return self.v


@dataclass(frozen=True, slots=True)
class Carries(Message):
    TAG: ClassVar[str] = "carries"
    token: Token


def test_context_decoders_decode_fields_that_need_a_key() -> None:
    wire = Carries(Token(5)).to_wire()

    got = Carries.from_wire(wire, peer="p", decoders={Token: lambda w: Token(int(w) + 1)})  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="no decoder"):
        Carries.from_wire(wire, peer="p")

    assert wire == {"token": 5} and got.token.v == 6
