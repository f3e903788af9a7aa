from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import Limits
from sharelearn.core.errors import ConfigError, ProtocolError
from sharelearn.core.link import Inbox, InboxQuotaExceeded
from sharelearn.core.memlink import MemNetwork

pytestmark = pytest.mark.timeout(60)


def _flood(net: MemNetwork, src: str, dst: str, payload: bytes, count: int) -> tuple[int, ProtocolError]:
    """Send `payload` under `count` distinct tags nobody reads; return how many went and the error."""
    link = net.link(src)
    for i in range(count):
        try:
            link.send(dst, f"junk/{i}", payload)
        except ProtocolError as exc:
            return i, exc
    raise AssertionError(f"{count} unread messages were all accepted")


def test_flood_of_unread_tags_fails_the_sender_names_it_and_releases_the_memory() -> None:
    net = MemNetwork(["bank", "shop"], timeout=5, limits=Limits(max_unread_tags=50))

    sent, err = _flood(net, "shop", "bank", b"x" * 1000, 10_000)

    assert sent == 50
    assert "peer 'shop' exceeded its inbox quota at 'bank'" in str(err) and "51 unread tags" in str(err)
    assert net.inbox("bank").queued_bytes() == 0 and net.inbox("bank").pending() == 0
    # What the receiver waits for from the flooder fails naming it, even a message it had queued.
    with pytest.raises(ProtocolError, match="peer 'shop' failed.*inbox quota") as info:
        net.link("bank").recv("shop", "junk/0")
    assert info.value.peer == "shop"
    # The flooder stays refused, whatever it sends next.
    with pytest.raises(ProtocolError, match="refused.*inbox quota"):
        net.link("shop").send("bank", "protocol/next", 1)
    # Other peers are not affected.
    net.link("bank").send("shop", "reply", 7)
    assert net.link("shop").recv("bank", "reply") == 7


def test_queued_bytes_and_messages_are_bounded_per_peer() -> None:
    by_bytes = MemNetwork(["a", "b"], timeout=5, limits=Limits(max_queued_bytes=100_000))
    by_count = MemNetwork(["a", "b"], timeout=5, limits=Limits(max_queued_messages=30))

    sent_bytes, err_bytes = _flood(by_bytes, "a", "b", b"y" * 10_000, 1000)
    by_count_link = by_count.link("a")
    for _ in range(30):  # one tag: the message count, not the tag count, is what runs out
        by_count_link.send("b", "same", 0)
    with pytest.raises(ProtocolError, match="31 messages under 1 unread tags") as err_count:
        by_count_link.send("b", "same", 0)

    assert sent_bytes == 9 and "KiB" not in str(err_bytes) and "bytes queued in 10 messages" in str(err_bytes)
    assert err_count.value.peer == "b"  # the sender's error names the peer it sent to
    assert by_bytes.inbox("b").queued_bytes() == 0


def test_one_message_into_an_empty_queue_may_exceed_the_byte_quota() -> None:
    net = MemNetwork(["a", "b"], timeout=5, limits=Limits(max_queued_bytes=1000))

    net.link("a").send("b", "big", np.zeros(1000))  # 8 kB alone: accepted
    got = net.link("b").recv("a", "big")
    net.link("a").send("b", "big2", np.zeros(1000))

    assert isinstance(got, np.ndarray) and got.shape == (1000,)
    with pytest.raises(ProtocolError, match="inbox quota"):
        net.link("a").send("b", "more", np.zeros(10))


def test_a_protocol_that_sends_far_ahead_within_the_quota_still_works() -> None:
    net = MemNetwork(["guest", "host"], timeout=10)
    host = net.link("host").scope("epoch", 0)
    guest = net.link("guest").scope("epoch", 0)

    for batch in range(2000):  # the host streams every batch before the guest reads one
        host.send("guest", f"batch/{batch}/enc", np.full(64, batch, dtype=np.uint64))
    total = sum(int(guest.recv("host", f"batch/{b}/enc")[0]) for b in range(2000))  # type: ignore[index]

    assert total == sum(range(2000))
    assert net.inbox("guest").pending() == 0 and net.inbox("guest").queued_bytes() == 0


def test_a_receive_waiting_on_the_flooder_wakes_with_its_name() -> None:
    net = MemNetwork(["bank", "shop"], timeout=20, limits=Limits(max_unread_tags=5))
    errors: list[BaseException] = []

    def wait_for_shop() -> None:
        try:
            net.link("bank").recv("shop", "protocol/step")
        except ProtocolError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_shop)
    waiter.start()
    _flood(net, "shop", "bank", b"z", 100)
    waiter.join(10)

    assert not waiter.is_alive()
    assert len(errors) == 1 and "peer 'shop'" in str(errors[0]) and "inbox quota" in str(errors[0])


def test_audit_records_only_accepted_messages() -> None:
    audit = WireAudit()
    inbox = Inbox("bank", audit, Limits(max_unread_tags=2))

    inbox.put("shop", "t1", b"one")
    inbox.put("shop", "t2", b"two")
    with pytest.raises(InboxQuotaExceeded):
        inbox.put("shop", "t3", b"three")

    assert [m.tag for m in audit.messages] == ["t1", "t2"]
    assert inbox.refusal("shop") is not None and inbox.refusal("other") is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_queued_bytes"):
        Limits(max_queued_bytes=0)


def test_flood_at_default_limits_is_stopped_near_the_quota() -> None:
    # The flood: a peer sends junk under tags nobody reads. Today's bound is the default
    # 512 MiB quota; the flood offers 768 MiB in 4 MiB messages.
    limits = Limits()
    net = MemNetwork(["bank", "shop"], timeout=5)
    chunk = b"\xab" * (4 << 20)
    tracemalloc.start()
    try:
        sent, err = _flood(net, "shop", "bank", chunk, 192)
        _, peak = tracemalloc.get_traced_memory()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert sent * len(chunk) <= limits.max_queued_bytes < (sent + 1) * len(chunk) + (1 << 20)
    assert "inbox quota" in str(err)
    assert peak < limits.max_queued_bytes + (64 << 20)
    # Once refused, only the audit's bounded sample of the flood stays in memory.
    assert retained < net.audit.payload_cap + (16 << 20)
