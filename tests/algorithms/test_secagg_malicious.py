"""Secure aggregation against a malicious server (Bonawitz et al. 2017, §4.2): the attacks must fail.

Each test plays the server as an adversary would, with the stage functions the honest server uses,
and checks that no client's update can be rebuilt: the clients refuse, or what they reveal is too
little. Keys and certificates come from a throwaway CA (`ephemeral_identities`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import pytest

from sharelearn.algorithms.horizontal import secagg
from sharelearn.algorithms.horizontal.identity import Identity, ephemeral_identities
from sharelearn.core.errors import PartyFailed, ProtocolError
from sharelearn.core.link import Link
from sharelearn.testing.roles import RoleRun

SERVER = "srv"
N, T, LENGTH = 5, 3, 16
NAMES = [f"c{i}" for i in range(N)]
IDS = ephemeral_identities([SERVER, *NAMES])
OTHER_CA = ephemeral_identities([SERVER, *NAMES])  # a CA the job does not trust


def _cfg(threshold: int = T) -> secagg.SecAggConfig:
    return secagg.SecAggConfig(n_clients=N, threshold=threshold, length=LENGTH, modulus_bits=32, round_id=7)


def _policy() -> secagg.ClientPolicy:
    return secagg.ClientPolicy(expected=lambda n: _cfg(), clients=frozenset(NAMES))


def _inputs() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(3)
    return {i: rng.integers(0, 2**32, LENGTH, dtype=np.uint64).astype(np.uint32) for i in range(N)}


def _through_masked(
    cfg: secagg.SecAggConfig,
) -> tuple[secagg.ServerState, list[secagg.ClientState], dict[int, np.ndarray]]:
    """Run AdvertiseKeys, ShareKeys and MaskedInput honestly for every client; return the masked inputs."""
    states, keys = [], {}
    for i, name in enumerate(NAMES):
        st, keys[i] = secagg.client_advertise(cfg, i, IDS[name], NAMES, _policy())
        states.append(st)
    server, routed = secagg.server_collect_keys(cfg, keys)
    inboxes = secagg.server_route_shares(
        server, {i: secagg.client_share_keys(states[i], routed[i]) for i in range(N)}
    )
    xs = _inputs()
    masked = {i: secagg.client_masked_input(states[i], inboxes[i], xs[i]) for i in range(N)}
    secagg.server_collect_masked(server, masked)
    return server, states, masked


def test_a_server_announcing_a_lower_threshold_is_refused_by_every_client() -> None:
    for t in (2, T - 1):
        cfg = _cfg(t)
        for i, name in enumerate(NAMES):
            with pytest.raises(ProtocolError, match=f"threshold {t}, below the 3"):
                secagg.client_advertise(cfg, i, IDS[name], NAMES, _policy())
    # Even with no job policy, a client refuses less than a strict majority of its share holders.
    with pytest.raises(ProtocolError, match="threshold 2, below the 3"):
        secagg.client_advertise(_cfg(2), 0, IDS["c0"], NAMES)
    # A higher threshold than the job's is fine; other parameters must be the job's.
    secagg.client_advertise(_cfg(4), 0, IDS["c0"], NAMES, _policy())
    other = secagg.SecAggConfig(n_clients=N, threshold=T, length=LENGTH, modulus_bits=20, round_id=7)
    with pytest.raises(ProtocolError, match="modulus_bits=20"):
        secagg.client_advertise(other, 0, IDS["c0"], NAMES, _policy())
    with pytest.raises(ProtocolError, match="index 1"):  # the roster must give me my own index
        secagg.client_advertise(_cfg(), 1, IDS["c0"], NAMES, _policy())
    with pytest.raises(ProtocolError, match="srv"):  # the server cannot enrol itself as a client
        secagg.client_advertise(_cfg(), 0, IDS["c0"], ["c0", "c1", "c2", "c3", SERVER], _policy())


def _reveal(
    server: secagg.ServerState, states: list[secagg.ClientState], views: Mapping[int, frozenset[int]]
) -> dict[int, Any]:
    """The adversary's ConsistencyCheck: client i is shown survivor set views[i]; for each client, the
    server relays the signatures of its holders that were shown the same set (the most it can pass)."""
    sigs = {
        i: secagg.client_sign_survivors(states[i], np.array(sorted(v), dtype=np.int64))
        for i, v in views.items()
    }
    revealed: dict[int, Any] = {}
    for i, view in views.items():
        same = sorted(j for j in views if views[j] == view)
        msg: dict[str, Any] = {
            "index": np.array(same, dtype=np.int64),
            "certs": [IDS[NAMES[j]].cert_pem for j in same],
            "sigs": [sigs[j]["sig"] for j in same],
        }
        try:
            revealed[i] = secagg.client_unmask(states[i], msg)
        except ProtocolError:  # SecAggError too: fewer than t saw this view
            continue
    return revealed


def _shares_of(revealed: Mapping[int, Any], victim: int, which: str) -> int:
    return sum(int(victim in set(doc[f"{which}_index"].tolist())) for doc in revealed.values())


def test_different_survivor_lists_never_give_both_shares_of_one_client() -> None:
    """Attack (a): tell some clients that c0 survived (they reveal b_0) and the others that it dropped
    (they would reveal s_sk_0). Every split of the five clients is tried; at most one kind reaches t."""
    victim, everyone = 0, frozenset(range(N))
    best = (0, 0)
    for k in range(N + 1):
        for group in itertools.combinations(range(1, N), k):
            server, states, _ = _through_masked(_cfg())
            dropped_view = everyone - {victim}
            views = {i: (dropped_view if i in group else everyone) for i in range(N)}
            revealed = _reveal(server, states, views)
            b, s = _shares_of(revealed, victim, "b"), _shares_of(revealed, victim, "s")
            assert not (b >= T and s >= T), f"split {group}: {b} b-shares and {s} s-shares of c0"
            best = max(best, (min(b, s), max(b, s)))
    assert best[0] < T  # the adversary's best split still leaves one kind of share short


def test_a_client_signs_one_survivor_set_and_unmasks_once() -> None:
    server, states, _ = _through_masked(_cfg())
    survivors = np.arange(N, dtype=np.int64)
    sigs = {i: secagg.client_sign_survivors(states[i], survivors) for i in range(N)}
    with pytest.raises(ProtocolError, match="second survivor set"):
        secagg.client_sign_survivors(states[1], survivors[1:])
    relayed = secagg.server_collect_signatures(server, sigs)
    first = secagg.client_unmask(states[1], relayed[1])
    assert set(first["b_index"].tolist()) == set(range(N)) and first["s_index"].size == 0
    with pytest.raises(ProtocolError, match="unmask twice"):
        secagg.client_unmask(states[1], relayed[1])
    # A signature over another set, relayed as if over mine, does not verify.
    forged = dict(relayed[2])
    forged["sigs"] = [IDS[NAMES[j]].sign(b"another survivor set") for j in forged["index"].tolist()]
    with pytest.raises(ProtocolError, match="signature on the survivor set"):
        secagg.client_unmask(states[2], forged)
    # Fewer than t signers are refused.
    short = {
        "index": relayed[3]["index"][2:4],
        "certs": relayed[3]["certs"][2:4],
        "sigs": relayed[3]["sigs"][2:4],
    }
    assert 3 in short["index"].tolist()
    with pytest.raises(secagg.SecAggError, match="below the threshold"):
        secagg.client_unmask(states[3], short)


def _substituted(how: str) -> tuple[Identity, dict[str, Any]]:
    """The keys message the adversary forges for c0: its own X25519 keys, signed as best it can."""
    c_sk, s_sk = bytes(range(32)), bytes(range(1, 33))
    from nacl.bindings import crypto_scalarmult_base

    c_pk, s_pk = bytes(crypto_scalarmult_base(c_sk)), bytes(crypto_scalarmult_base(s_sk))
    signer = {"server": IDS[SERVER], "other-ca": OTHER_CA["c0"], "keep-cert": IDS[SERVER]}[how]
    digest = secagg._digest(_cfg(), NAMES)
    sig = signer.sign(secagg._keys_statement(digest, 0, c_pk, s_pk))
    cert = IDS["c0"].cert_pem if how == "keep-cert" else signer.cert_pem
    return signer, {"c_pk": c_pk, "s_pk": s_pk, "cert": cert, "sig": sig}


@pytest.mark.parametrize("how", ["server", "other-ca", "keep-cert"])
def test_server_substituting_its_own_keys_for_a_neighbour_is_detected(how: str) -> None:
    """Attack (b): the server relays its own public keys as c0's, signed with its own certificate,
    with a certificate for 'c0' from another CA, or under c0's real certificate. Every client refuses
    before sealing a share to those keys."""
    cfg = _cfg()
    states, keys = [], {}
    for i, name in enumerate(NAMES):
        st, keys[i] = secagg.client_advertise(cfg, i, IDS[name], NAMES, _policy())
        states.append(st)
    keys[0] = _substituted(how)[1]
    _, routed = secagg.server_collect_keys(cfg, keys)
    for i in range(1, N):
        with pytest.raises(ProtocolError, match="'c0'"):
            secagg.client_share_keys(states[i], routed[i])


# --- the same refusals over a Link (memory and gRPC processes) -----------------------------------


def _lying_server(threshold: int, link: Link) -> str:
    """A server role that announces `threshold` and then waits for the clients' keys."""
    cfg = _cfg(threshold)
    for i, name in enumerate(NAMES):
        link.send(name, "secagg/setup", {"config": cfg.to_wire(), "index": i, "roster": list[Any](NAMES)})
    return "sent"


def _client(identity: Identity, link: Link) -> bool:
    # The identity travels with the role: a spawned process would mint a CA of its own on import.
    x = _inputs()[NAMES.index(identity.party)]
    return secagg.run_secagg_client(link, SERVER, x, identity=identity, policy=_policy())


def _honest_server(link: Link) -> list[int]:
    result = secagg.run_secagg_server(link, NAMES, _cfg(), stage_timeout=100.0)  # slow shared CI cores
    return [int(v) for v in result.total]


def test_clients_over_a_link_refuse_a_lowered_threshold(run_parties: Callable[..., RoleRun]) -> None:
    roles: dict[str, Callable[[Link], Any]] = {SERVER: partial(_lying_server, 2)}
    roles.update({name: partial(_client, IDS[name]) for name in NAMES})
    with pytest.raises(PartyFailed) as info:
        run_parties(roles, timeout=150.0)
    assert "threshold 2, below the 3" in str(info.value)


def test_honest_round_over_a_link_sums_exactly(run_parties: Callable[..., RoleRun]) -> None:
    roles: dict[str, Callable[[Link], Any]] = {SERVER: _honest_server}
    roles.update({name: partial(_client, IDS[name]) for name in NAMES})
    run = run_parties(roles, timeout=150.0)
    expected = np.sum(np.stack(list(_inputs().values())).astype(np.uint64), axis=0) & np.uint64(2**32 - 1)
    assert run[SERVER] == [int(v) for v in expected]
    assert all(run[name] is True for name in NAMES)
