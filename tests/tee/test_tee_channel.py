from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sharelearn.core.errors import AttestationError, CryptoError
from sharelearn.core.link import Link
from sharelearn.tee import channel
from sharelearn.tee.attestation import QuoteAppraiser
from sharelearn.tee.backend import EnclaveIdentity
from sharelearn.tee.policy import AttestationPolicy, EnclaveIdentityRule
from sharelearn.tee.sim.backend import SimBackend
from sharelearn.tee.sim.platform import SimPlatform
from sharelearn.testing.roles import run_roles


def _ident(svn: int = 2) -> EnclaveIdentity:
    return EnclaveIdentity(os.urandom(32), os.urandom(32), 7, svn)


def _appraiser(platform: SimPlatform, *accepted: EnclaveIdentity) -> QuoteAppraiser:
    rules = tuple(EnclaveIdentityRule(mrenclave=i.mrenclave) for i in accepted)
    policy = AttestationPolicy(
        accept=rules, name="peer", allow_simulation=True, simulation_root_der=platform.root_der
    )
    return QuoteAppraiser(policy)


def _attester(platform: SimPlatform, ident: EnclaveIdentity) -> Callable[[bytes], bytes]:
    return lambda rd: platform.evidence(ident, rd)


def _handshake(platform: SimPlatform, server: EnclaveIdentity) -> tuple[channel.Session, channel.Session]:
    state_i, m1 = channel.initiator_start()
    state_r, m2 = channel.responder_respond(m1, attester=_attester(platform, server))
    session_i, m3 = channel.initiator_finish(state_i, m2, appraiser=_appraiser(platform, server))
    return session_i, channel.responder_finish(state_r, m3)


def test_handshake_establishes_bidirectional_records(platform: SimPlatform) -> None:
    server = _ident()

    client, enclave = _handshake(platform, server)

    assert client.peer is not None and client.peer.mrenclave == server.mrenclave and enclave.peer is None
    assert client.transcript_hash == enclave.transcript_hash
    assert enclave.open(client.seal(b"features", b"rid-1"), b"rid-1") == b"features"
    assert client.open(enclave.seal(b"score")) == b"score"


def test_records_cannot_be_replayed_reordered_or_reflected(platform: SimPlatform) -> None:
    client, enclave = _handshake(platform, _ident())
    r0, r1 = client.seal(b"a"), client.seal(b"b")

    with pytest.raises(CryptoError):
        enclave.open(r1)  # reordered
    assert enclave.open(r0) == b"a"
    with pytest.raises(CryptoError):
        enclave.open(r0)  # replayed
    with pytest.raises(CryptoError):
        client.open(client.seal(b"c"))  # reflected back to its sender


def test_replayed_m2_from_an_old_session_is_refused(platform: SimPlatform) -> None:
    server = _ident()
    _, m1_old = channel.initiator_start()
    _, m2_old = channel.responder_respond(m1_old, attester=_attester(platform, server))
    state_new, _ = channel.initiator_start()

    with pytest.raises(AttestationError, match="report_data does not bind"):
        channel.initiator_finish(state_new, m2_old, appraiser=_appraiser(platform, server))


def test_substituted_key_next_to_a_genuine_quote_is_refused(platform: SimPlatform) -> None:
    server = _ident()
    state_i, m1 = channel.initiator_start()
    _, m2 = channel.responder_respond(m1, attester=_attester(platform, server))
    mitm = m2[:37] + os.urandom(32) + m2[69:]  # attacker's X25519 key, server's evidence

    with pytest.raises(AttestationError, match="report_data does not bind"):
        channel.initiator_finish(state_i, mitm, appraiser=_appraiser(platform, server))


def test_enclave_of_other_measurement_is_refused(platform: SimPlatform) -> None:
    expected, impostor = _ident(), _ident()
    state_i, m1 = channel.initiator_start()
    _, m2 = channel.responder_respond(m1, attester=_attester(platform, impostor))

    with pytest.raises(AttestationError, match="identity matches no accepted rule"):
        channel.initiator_finish(state_i, m2, appraiser=_appraiser(platform, expected))


def test_mutual_key_sync_between_same_measurement_over_link(platform: SimPlatform) -> None:
    me = _ident()
    same = channel.same_enclave_policy(me, _appraiser(platform, me).policy)
    appraiser = QuoteAppraiser(same)

    def holder(link: Link) -> bytes:
        session = channel.run_responder(link, "joiner", attester=_attester(platform, me), appraiser=appraiser)
        link.send("joiner", "crk", session.seal(b"cluster root key"))
        return session.transcript_hash

    def joiner(link: Link) -> bytes:
        session = channel.run_initiator(link, "holder", appraiser=appraiser, attester=_attester(platform, me))
        value = link.recv("holder", "crk")
        assert isinstance(value, bytes)
        return session.open(value)

    out = run_roles({"holder": holder, "joiner": joiner}, timeout=20)

    assert out["joiner"] == b"cluster root key"


def test_mutual_responder_refuses_unattested_or_foreign_initiator(platform: SimPlatform) -> None:
    me, stranger = _ident(), _ident()
    appraiser = _appraiser(platform, me)
    for attester in (None, _attester(platform, stranger)):
        state_i, m1 = channel.initiator_start()
        state_r, m2 = channel.responder_respond(m1, attester=_attester(platform, me))
        _, m3 = channel.initiator_finish(state_i, m2, appraiser=appraiser, attester=attester)
        with pytest.raises(AttestationError):
            channel.responder_finish(state_r, m3, appraiser=appraiser)


def test_channel_into_a_simulated_enclave_process(
    platform: SimPlatform, backend: SimBackend, make_bundle: Callable[..., Path]
) -> None:
    image = backend.load(make_bundle())
    state, m1 = channel.initiator_start()

    with backend.launch(image) as enclave:
        m2 = enclave.call("asc_respond", m1)
        assert isinstance(m2, bytes)
        session, m3 = channel.initiator_finish(state, m2, appraiser=_appraiser(platform, image.identity))
        enclave.call("asc_finish", m3)
        reply = enclave.call("secure_echo", session.seal(b"x=1.5"))

    assert isinstance(reply, bytes) and session.open(reply) == b"enclave got: x=1.5"
