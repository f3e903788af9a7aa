"""check_link(): the behaviour every Link implementation must have (like trio's stream checks)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import numpy as np

from sharelearn.core.codec import DEFAULT_LIMITS
from sharelearn.core.errors import PeerTimeout, ProtocolError
from sharelearn.core.link import Link

__all__ = ["check_link"]

PairFactory = Callable[[], AbstractContextManager[tuple[Link, Link]]]


def _values() -> Iterator[object]:
    yield None
    yield True
    yield -(2**200) + 7
    yield 3.25
    yield "tag-free text ✓"
    yield b"\x00\xff" * 10
    yield np.arange(12, dtype=np.int64).reshape(3, 4)
    yield {"w": np.linspace(0, 1, 5), "n": [1, 2, 3], "nested": {"s": "x"}}


def _check_round_trip(a: Link, b: Link) -> None:
    for i, value in enumerate(_values()):
        a.send(b.me, f"v{i}", value)  # type: ignore[arg-type]
    for i, value in enumerate(_values()):
        got = b.recv(a.me, f"v{i}", timeout=10)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        elif isinstance(value, dict):
            if not isinstance(got, dict):
                raise AssertionError(f"dict round trip returned {type(got).__name__}")
            np.testing.assert_array_equal(got["w"], value["w"])
            if got["n"] != value["n"] or got["nested"] != value["nested"]:
                raise AssertionError(f"dict round trip changed {value!r} into {got!r}")
        elif got != value:
            raise AssertionError(f"round trip changed {value!r} into {got!r}")


def _check_order_and_scope(a: Link, b: Link) -> None:
    for k in range(20):
        a.send(b.me, "seq", k)
    a.scope("epoch", 1).send(b.me, "x", "one")
    a.scope("epoch", 2).send(b.me, "x", "two")
    if [b.recv(a.me, "seq", timeout=10) for _ in range(20)] != list(range(20)):
        raise AssertionError("messages of one tag arrived out of order")
    if (
        b.scope("epoch", 2).recv(a.me, "x", timeout=10) != "two"
        or b.scope("epoch", 1).recv(a.me, "x", timeout=10) != "one"
    ):
        raise AssertionError("scoped tags were mixed up")


def _check_errors(a: Link, b: Link) -> None:
    try:
        b.recv(a.me, "never-sent", timeout=0.2)
    except PeerTimeout as exc:
        if a.me not in str(exc) or "never-sent" not in str(exc):
            raise AssertionError(f"timeout error does not name peer and tag: {exc}") from exc
    else:
        raise AssertionError("recv without a message did not time out")
    try:
        a.send("nobody", "x", 1)
    except ProtocolError:
        pass
    else:
        raise AssertionError("send to an unknown peer did not fail")


def _check_both_directions(a: Link, b: Link) -> None:
    def echo() -> None:
        b.send(a.me, "pong", int(b.recv(a.me, "ping", timeout=10)) + 1)  # type: ignore[arg-type]

    t = threading.Thread(target=echo)
    t.start()
    sent_before = a.stats.bytes_sent
    a.send(b.me, "ping", 41)
    if a.recv(b.me, "pong", timeout=10) != 42:
        raise AssertionError("ping-pong failed")
    t.join()
    if a.stats.bytes_sent <= sent_before or a.stats.rounds < 1:
        raise AssertionError(f"stats did not count the exchange: {a.stats.as_dict()}")


def _check_flooding_peer_is_refused(a: Link, b: Link) -> None:
    cap = getattr(b, "limits", DEFAULT_LIMITS).max_unread_tags
    refused = None
    for i in range(cap + 1):  # one tag past the receiver's cap on unread tags
        try:
            a.send(b.me, f"junk/{i}", i)
        except ProtocolError as exc:
            refused = exc
            break
    if refused is None or "inbox quota" not in str(refused):
        raise AssertionError(f"{cap + 1} unread tags were accepted (error: {refused})")
    try:
        b.recv(a.me, "junk/0", timeout=10)
    except ProtocolError as exc:
        if repr(a.me) not in str(exc):
            raise AssertionError(f"the receive does not name the flooding peer: {exc}") from exc
    else:
        raise AssertionError("a message of a refused peer was still delivered")


def check_link(make_pair: PairFactory) -> None:
    """Run the conformance checks on fresh pairs of connected links from `make_pair`."""
    checks = (
        _check_round_trip,
        _check_order_and_scope,
        _check_errors,
        _check_both_directions,
        _check_flooding_peer_is_refused,
    )
    for check in checks:
        with make_pair() as (a, b):
            check(a, b)
