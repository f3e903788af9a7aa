from __future__ import annotations

import multiprocessing as mp
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from sharelearn.core.codec import DEFAULT_LIMITS, Limits
from sharelearn.core.errors import ProtocolError
from sharelearn.core.link import Link
from sharelearn.runtime.certs import init_certs, load_credentials
from sharelearn.runtime.grpc_link import GrpcLink
from sharelearn.testing.link_conformance import check_link

pytestmark = [pytest.mark.grpc, pytest.mark.timeout(60)]


@contextmanager
def _pair(
    tmp: Path, other_ca_for_b: bool = False, timeout: float = 10.0, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[GrpcLink, GrpcLink]]:
    init_certs(["a", "b"], tmp / "job")
    init_certs(["a", "b"], tmp / "other")
    a = GrpcLink(load_credentials(tmp / "job", "a"), ["a", "b"], timeout=timeout)
    b = GrpcLink(
        load_credentials(tmp / ("other" if other_ca_for_b else "job"), "b"),
        ["a", "b"],
        timeout=timeout,
        limits=limits,
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


def test_flooding_peer_is_refused_with_resource_exhausted_and_named(tmp_path: Path) -> None:
    with _pair(tmp_path, limits=Limits(max_unread_tags=20)) as (a, b):
        for i in range(20):
            a.send("b", f"junk/{i}", b"x" * 1000)
        with pytest.raises(
            ProtocolError, match="RESOURCE_EXHAUSTED.*peer 'a' exceeded its inbox quota at 'b'"
        ):
            a.send("b", "junk/20", b"x" * 1000)

        assert b.inbox.queued_bytes() == 0 and b.inbox.pending() == 0
        with pytest.raises(ProtocolError, match="peer 'a' failed.*inbox quota") as info:
            b.recv("a", "junk/0", timeout=5)
        assert info.value.peer == "a"
        # Refused from now on (before its body is read), whatever it sends.
        with pytest.raises(ProtocolError, match="RESOURCE_EXHAUSTED.*inbox quota"):
            a.send("b", "protocol/next", b"y" * 100_000)
        assert b.inbox.pending() == 0
        # The other direction still works.
        b.send("a", "reply", 5)
        assert a.recv("b", "reply", timeout=5) == 5


def _flooded_receiver(certs: str, conn: Connection) -> None:
    """Party b in its own process: a 16 MiB quota, then report what the flood did to it."""
    link = GrpcLink(
        load_credentials(certs, "b"), ["a", "b"], timeout=30, limits=Limits(max_queued_bytes=16 << 20)
    )
    try:
        base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(link.port)
        link.connect({"a": conn.recv()})
        try:
            link.recv("a", "protocol/step", timeout=60)
            error = ""
        except ProtocolError as exc:
            error = str(exc)
        conn.recv()  # the flooder is done
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib) / 1024
        conn.send((error, link.inbox.queued_bytes(), grown_mib))
    finally:
        link.close()
        conn.close()


def test_a_party_process_stays_within_its_quota_under_a_flood(tmp_path: Path) -> None:
    init_certs(["a", "b"], tmp_path)
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_flooded_receiver, args=(str(tmp_path), child), daemon=True)
    proc.start()
    a = GrpcLink(load_credentials(tmp_path, "a"), ["a", "b"], timeout=30)
    try:
        assert parent.poll(60)
        a.connect({"b": f"127.0.0.1:{parent.recv()}"})
        parent.send(f"127.0.0.1:{a.port}")
        refused = []
        for i in range(128):  # offers 128 MiB against a 16 MiB quota
            try:
                a.send("b", f"junk/{i}", b"\xab" * (1 << 20))
            except ProtocolError as exc:
                refused.append(str(exc))
        parent.send("done")
        assert parent.poll(60)
        error, queued, grown_mib = parent.recv()
    finally:
        a.close()
        proc.join(20)
        if proc.is_alive():
            proc.kill()

    assert len(refused) >= 128 - 16 and all("RESOURCE_EXHAUSTED" in r for r in refused)
    assert "peer 'a'" in error and "inbox quota" in error
    assert queued == 0
    assert grown_mib < 80, f"the flooded party grew by {grown_mib:.0f} MiB"


def _serial(certs: Path, party: str) -> str:
    from cryptography import x509

    return format(x509.load_pem_x509_certificate((certs / f"{party}.pem").read_bytes()).serial_number, "x")


def test_peer_with_a_revoked_certificate_is_refused_on_the_data_plane(tmp_path: Path) -> None:
    """b holds the revocation list naming a's serial: a cannot deliver to b, b will not send to a."""
    init_certs(["a", "b"], tmp_path)
    crl = [_serial(tmp_path, "a")]
    a = GrpcLink(load_credentials(tmp_path, "a"), ["a", "b"], timeout=3)
    b = GrpcLink(load_credentials(tmp_path, "b"), ["a", "b"], timeout=3, revoked=crl)
    a.connect({"b": f"127.0.0.1:{b.port}"})
    b.connect({"a": f"127.0.0.1:{a.port}"})
    try:
        # the revoked party sends: b's server refuses it, naming a and its serial
        with pytest.raises(ProtocolError, match=rf"PERMISSION_DENIED.*'a'.*{crl[0]}.*revoked"):
            a.send("b", "hello", 1)
        assert b.inbox.pending() == 0
        # b would send to the revoked party: refused before any byte of the message leaves b
        with pytest.raises(ProtocolError, match=rf"peer 'a'.*serial {crl[0]}, which is revoked"):
            b.send("a", "secret", 42)
        assert a.inbox.pending() == 0
    finally:
        a.close()
        b.close()


def test_a_revocation_list_naming_another_serial_changes_nothing(tmp_path: Path) -> None:
    init_certs(["a", "b"], tmp_path)
    a = GrpcLink(load_credentials(tmp_path, "a"), ["a", "b"], timeout=5, revoked=["dead"])
    b = GrpcLink(load_credentials(tmp_path, "b"), ["a", "b"], timeout=5, revoked=["dead"])
    a.connect({"b": f"127.0.0.1:{b.port}"})
    b.connect({"a": f"127.0.0.1:{a.port}"})
    try:
        a.send("b", "x", 7)
        b.send("a", "y", 8)
        assert b.recv("a", "x") == 7 and a.recv("b", "y") == 8
    finally:
        a.close()
        b.close()
