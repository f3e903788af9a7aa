from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sharelearn.core.errors import ProtocolError
from sharelearn.core.link import Link
from sharelearn.runtime.certs import init_certs, load_credentials
from sharelearn.runtime.grpc_link import GrpcLink
from sharelearn.testing.link_conformance import check_link

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(60)]


@contextmanager
def _pair(
    tmp: Path, other_ca_for_b: bool = False, timeout: float = 10.0
) -> Iterator[tuple[GrpcLink, GrpcLink]]:
    init_certs(["a", "b"], tmp / "job")
    init_certs(["a", "b"], tmp / "other")
    a = GrpcLink(load_credentials(tmp / "job", "a"), ["a", "b"], timeout=timeout)
    b = GrpcLink(
        load_credentials(tmp / ("other" if other_ca_for_b else "job"), "b"), ["a", "b"], timeout=timeout
    )
    a.connect({"b": f"127.0.0.1:{b.port}"})
    b.connect({"a": f"127.0.0.1:{a.port}"})
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_grpc_link_passes_the_link_conformance_suite(tmp_path: Path) -> None:
    counter = iter(range(100))

    @contextmanager
    def make() -> Iterator[tuple[Link, Link]]:
        with _pair(tmp_path / str(next(counter))) as pair:
            yield pair

    check_link(make)


def test_peer_with_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    with _pair(tmp_path, other_ca_for_b=True, timeout=2.0) as (a, b):
        with pytest.raises(ProtocolError, match="sending 'hello' to 'a'.*certificate"):
            b.send("a", "hello", 1)
        with pytest.raises(ProtocolError, match="sending 'hello' to 'b'"):
            a.send("b", "hello", 1)

        assert a.inbox.pending() == 0 and b.inbox.pending() == 0


def test_certificate_of_a_party_outside_the_job_is_refused(tmp_path: Path) -> None:
    init_certs(["a", "b", "mallory"], tmp_path)
    a = GrpcLink(load_credentials(tmp_path, "a"), ["a", "b"], timeout=3)
    # mallory holds a valid certificate of the same CA but is not a party of a's job.
    m = GrpcLink(load_credentials(tmp_path, "mallory"), ["a", "mallory"], timeout=3)
    m.connect({"a": f"127.0.0.1:{a.port}"})
    try:
        with pytest.raises(ProtocolError, match="PERMISSION_DENIED"):
            m.send("a", "hello", 1)
        assert a.inbox.pending() == 0
    finally:
        a.close()
        m.close()
