from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from sharelearn.core.errors import PartyFailed
from sharelearn.core.link import Link
from sharelearn.core.memlink import MemNetwork
from sharelearn.testing.link_conformance import check_link
from sharelearn.testing.roles import run_roles


@contextmanager
def _mem_pair() -> Iterator[tuple[Link, Link]]:
    net = MemNetwork(["a", "b"], timeout=5)
    yield net.link("a"), net.link("b")


def test_memlink_passes_the_link_conformance_suite() -> None:
    check_link(_mem_pair)


def test_run_roles_names_the_failing_party_and_wakes_the_others() -> None:
    def bad(link: Link) -> None:
        raise ValueError("boom")

    def waiting(link: Link) -> object:
        return link.recv("bad", "never", timeout=30)

    with pytest.raises(PartyFailed, match="'bad'.*boom"):
        run_roles({"bad": bad, "good": waiting}, timeout=30)


def test_audit_records_every_delivered_message() -> None:
    out = run_roles(
        {
            "a": lambda link: link.send("b", "x", np.arange(4, dtype=np.int64)),
            "b": lambda link: link.recv("a", "x").sum(),
        }
    )

    assert out["b"] == 6
    assert [(m.src, m.dst, m.tag) for m in out.audit.messages] == [("a", "b", "x")]
    assert out.audit.bytes_received("b") == out.stats["a"]["bytes_sent"]
