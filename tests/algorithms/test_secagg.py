from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from sharelearn.algorithms.horizontal import secagg
from sharelearn.algorithms.horizontal.identity import ephemeral_identities
from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, CryptoError, DecodeError, PartyFailed, ProtocolError
from sharelearn.core.link import Link
from sharelearn.crypto import prg
from sharelearn.crypto.kernels import mbx
from sharelearn.testing.leaks import assert_no_leak
from sharelearn.testing.roles import RoleRun, run_roles

SERVER = "srv"
IDS = ephemeral_identities([SERVER, *(f"c{i}" for i in range(16))])


def _inputs(n: int, length: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.uint64((1 << k) - 1) if k < 64 else np.uint64(2**64 - 1)
    return {f"c{i}": rng.integers(0, 2**63, length, dtype=np.uint64) & mask for i in range(n)}


def _run(
    xs: Mapping[str, np.ndarray], cfg: secagg.SecAggConfig, drops: Mapping[str, str] | None = None
) -> RoleRun:
    drops = drops or {}

    def server(link: Link) -> secagg.SecAggResult:
        return secagg.run_secagg_server(link, list(xs), cfg, stage_timeout=20.0)

    def client(name: str) -> object:
        return lambda link: secagg.run_secagg_client(
            link, SERVER, xs[name], identity=IDS[name], drop_after=drops.get(name)
        )

    from sharelearn.core.audit import WireAudit

    return run_roles({SERVER: server, **{c: client(c) for c in xs}}, timeout=30.0, audit=WireAudit())


def _expected(xs: Mapping[str, np.ndarray], survivors: tuple[str, ...], k: int) -> np.ndarray:
    total = np.zeros_like(next(iter(xs.values())))
    for c in survivors:
        total += xs[c]
    return total & np.uint64((1 << k) - 1) if k < 64 else total


@pytest.mark.parametrize("stage", secagg.DROP_STAGES)
@pytest.mark.parametrize("dropouts", [0, 1, "max"])
def test_survivor_sum_is_exact_with_dropouts_at_each_stage(stage: str, dropouts: int | str) -> None:
    n, t, k = 7, 4, 32
    xs = _inputs(n, 257, k, seed=hash((stage, str(dropouts))) % 1000)
    count = n - t if dropouts == "max" else int(dropouts)
    dropped = [f"c{i}" for i in range(1, 1 + count)]
    cfg = secagg.SecAggConfig(n_clients=n, threshold=t, length=257, modulus_bits=k, round_id=3)

    result = _run(xs, cfg, {c: stage for c in dropped})[SERVER]

    # Clients leaving after their masked input still count: their input is in the sum.
    expected_survivors = [c for c in xs if stage == "masked" or c not in dropped]
    assert list(result.survivors) == expected_survivors
    assert sorted(result.dropped[stage]) == sorted(dropped)
    assert np.array_equal(result.total, _expected(xs, result.survivors, k))


@pytest.mark.parametrize("k", [64, 20])
def test_secagg_plus_neighbour_graph_sums_exactly_with_dropouts_in_every_stage(k: int) -> None:
    n = 12
    xs = _inputs(n, 100, k, seed=k)
    cfg = secagg.SecAggConfig(n_clients=n, threshold=3, length=100, modulus_bits=k, neighbours=4, round_id=1)
    drops = {"c0": "advertise", "c5": "share", "c9": "masked"}

    result = _run(xs, cfg, drops)[SERVER]

    assert "c0" not in result.survivors and "c5" not in result.survivors and "c9" in result.survivors
    assert np.array_equal(result.total, _expected(xs, result.survivors, k))


def test_neighbour_graph_is_symmetric_with_the_requested_degree() -> None:
    cfg = secagg.SecAggConfig(
        n_clients=30, threshold=3, length=1, neighbours=6, graph_seed=bytes(range(32)), round_id=0
    )
    graph = secagg.neighbour_sets(cfg)

    assert all(len(g) == 6 and i not in g for i, g in enumerate(graph))
    assert all(i in graph[j] for i, g in enumerate(graph) for j in g)
    full = secagg.neighbour_sets(secagg.SecAggConfig(n_clients=5, threshold=3, length=1))
    assert full[2] == frozenset({0, 1, 3, 4})


@pytest.mark.parametrize("stage", secagg.DROP_STAGES)
def test_below_threshold_the_round_fails_cleanly_naming_the_threshold(stage: str) -> None:
    n, t = 5, 3
    xs = _inputs(n, 16, 32)
    cfg = secagg.SecAggConfig(n_clients=n, threshold=t, length=16, modulus_bits=32)

    with pytest.raises(PartyFailed) as info:
        _run(xs, cfg, {"c0": stage, "c1": stage, "c2": stage})

    assert info.value.args and SERVER in str(info.value)
    assert isinstance(info.value.__cause__, secagg.SecAggError)
    assert "below the threshold 3" in str(info.value.__cause__)


def test_server_receives_uniformly_masked_inputs_and_no_update_bytes() -> None:
    n, length, k = 4, 4096, 32
    rng = np.random.default_rng(5)
    # Very non-uniform inputs: small quantised values, mostly zero high bits.
    floats = {f"c{i}": rng.normal(0, 0.1, length) for i in range(n)}
    xs = {c: secagg.quantize(v, frac_bits=16, modulus_bits=k, max_summands=n) for c, v in floats.items()}
    cfg = secagg.SecAggConfig(n_clients=n, threshold=3, length=length, modulus_bits=k)

    run = _run(xs, cfg)

    to_server = [m for m in run.audit.messages if m.dst == SERVER]
    masked = [
        codec.decode(payload)
        for m, payload in zip(to_server, run.audit.received(SERVER), strict=True)
        if m.tag.endswith("secagg/masked")
    ]
    assert len(masked) == n
    bits = np.array([[(int(w) >> b) & 1 for b in range(k)] for y in masked for w in y[:512]])
    # Each of the 32 bit positions is a fair coin: 2048 draws, 6 sigma = 0.066.
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.066)
    for y in masked:
        hist = np.bincount((np.asarray(y) >> np.uint64(24)).astype(np.int64), minlength=256)
        chi2 = float(((hist - length / 256) ** 2 / (length / 256)).sum())
        assert chi2 < 400  # 255 dof: mean 255, p(chi2 > 400) ~ 1e-8
        assert np.abs(np.corrcoef(np.asarray(y, dtype=np.float64), xs["c0"].astype(np.float64))[0, 1]) < 0.1
    # Masked inputs travel as uint32 words in Z_2^32 (half of uint64's bytes).
    assert all(np.asarray(y).dtype == np.uint32 for y in masked)
    # No client's quantised update words (as the wire would carry them: consecutive little-endian
    # uint32 pairs, or uint64), nor its float update, appear in the server's bytes.
    for c in xs:
        words = [int(w) for w in xs[c] if w > 1 << 20]
        assert_no_leak(run.audit, SERVER, [w.to_bytes(8, "little") for w in words[:300]], what="update word")
        pairs = [xs[c][j : j + 2].astype("<u4").tobytes() for j in range(0, 600, 2)]
        assert_no_leak(run.audit, SERVER, pairs, what="pair of update words")
        assert_no_leak(run.audit, SERVER, list(floats[c][:300]), what="float update")
    assert np.array_equal(run[SERVER].total, _expected(xs, run[SERVER].survivors, k))


def _stages(
    n: int, t: int, length: int
) -> tuple[secagg.ServerState, list[secagg.ClientState], dict[int, object]]:
    cfg = secagg.SecAggConfig(n_clients=n, threshold=t, length=length, modulus_bits=32)
    states, keys = [], {}
    roster = [f"c{i}" for i in range(n)]
    for i in range(n):
        st, msg = secagg.client_advertise(cfg, i, IDS[roster[i]], roster)
        states.append(st)
        keys[i] = msg
    server, routed = secagg.server_collect_keys(cfg, keys)
    shares = {i: secagg.client_share_keys(states[i], routed[i]) for i in range(n)}
    return server, states, secagg.server_route_shares(server, shares)


def _signed(
    server: secagg.ServerState,
    states: list[secagg.ClientState],
    survivors: np.ndarray,
    members: Mapping[int, object],
) -> dict[int, dict[str, object]]:
    """The honest ConsistencyCheck: every member signs `survivors`, the server relays the signatures."""
    sigs = {i: secagg.client_sign_survivors(states[i], survivors) for i in members}
    return secagg.server_collect_signatures(server, sigs)


def test_relayed_shares_are_sealed_and_tampering_is_detected() -> None:
    server, states, inboxes = _stages(3, 2, 8)
    x = np.zeros(8, dtype=np.uint64)
    tampered = dict(inboxes[0])
    tampered["sealed"] = tampered["sealed"].copy()
    tampered["sealed"][0, 20] ^= 1
    masked = {0: secagg.client_masked_input(states[0], tampered, x)}
    masked.update({i: secagg.client_masked_input(states[i], inboxes[i], x) for i in (1, 2)})
    survivors = secagg.server_collect_masked(server, masked)

    signed = _signed(server, states, survivors, masked)
    with pytest.raises(ProtocolError, match="fail authentication"):
        secagg.client_unmask(states[0], signed[0])
    assert "secret" not in repr(states[0]) and "c_sk" not in repr(states[0])


def test_clients_and_server_on_different_keystream_backends_agree_exactly() -> None:
    if prg.keystream_backend() != "ipp":
        pytest.skip("ipp-crypto's AES is not installed here: only one backend to compare")
    server, states, inboxes = _stages(4, 3, 1001)
    xs = _inputs(4, 1001, 32, seed=9)
    masked = {}
    try:
        for i, backend in ((0, "ipp"), (1, "openssl"), (2, "ipp")):  # client 3 leaves after sharing
            mbx.force_portable(backend == "openssl")
            masked[i] = secagg.client_masked_input(states[i], inboxes[i], xs[f"c{i}"])
        survivors = secagg.server_collect_masked(server, masked)
        signed = _signed(server, states, survivors, masked)
        replies = {i: secagg.client_unmask(states[i], signed[i]) for i in masked}
        mbx.force_portable(True)  # the server rebuilds the self masks and c3's pairwise masks with OpenSSL
        total = secagg.server_unmask(server, replies)
    finally:
        mbx.force_portable(False)

    assert np.array_equal(total, _expected(xs, ("c0", "c1", "c2"), 32))


def test_malformed_messages_fail_naming_the_sender() -> None:
    cfg = secagg.SecAggConfig(n_clients=3, threshold=2, length=4)
    with pytest.raises(DecodeError, match="client 1"):
        secagg.server_collect_keys(
            cfg,
            {
                0: {"c_pk": bytes(32), "s_pk": bytes(32), "cert": b"c", "sig": b"s"},
                1: {"c_pk": b"x", "s_pk": b"y", "cert": b"c", "sig": b"s"},
            },
        )
    server, states, inboxes = _stages(3, 2, 4)
    with pytest.raises(DecodeError, match="client 2"):
        secagg.server_collect_masked(server, {0: np.zeros(4, np.uint32), 2: np.zeros(5, np.uint32)})
    with pytest.raises(DecodeError, match="client 1.*uint32"):  # Z_2^32 inputs travel as uint32 words
        secagg.server_collect_masked(server, {0: np.zeros(4, np.uint32), 1: np.zeros(4, np.uint64)})
    bad = {"from": np.array([7], dtype=np.int64), "sealed": inboxes[0]["sealed"][:1]}
    with pytest.raises(DecodeError, match="not my neighbours"):
        secagg.client_masked_input(states[0], bad, np.zeros(4, np.uint64))
    with pytest.raises(ConfigError, match="threshold"):
        secagg.SecAggConfig(n_clients=3, threshold=4, length=4)
    with pytest.raises(ConfigError, match="drop stage"):
        secagg.run_secagg_client(None, SERVER, np.zeros(1, np.uint64), identity=IDS["c0"], drop_after="later")  # type: ignore[arg-type]


def test_unmask_refuses_a_survivor_list_below_the_threshold() -> None:
    _, states, inboxes = _stages(4, 3, 4)
    secagg.client_masked_input(states[0], inboxes[0], np.zeros(4, np.uint64))

    with pytest.raises(secagg.SecAggError, match="below the threshold"):
        secagg.client_sign_survivors(states[0], np.array([0, 1], dtype=np.int64))


def test_quantize_round_trips_and_refuses_values_that_could_wrap() -> None:
    v = np.array([-1.5, 0.0, 2.25, 1e-6, -3.0])
    for k, f in ((64, 24), (32, 16)):
        q = secagg.quantize(v, frac_bits=f, modulus_bits=k, max_summands=10)
        assert np.allclose(secagg.dequantize(q, frac_bits=f, modulus_bits=k), v, atol=2.0**-f)
        total = (q + q + q) & np.uint64((1 << k) - 1 if k < 64 else 2**64 - 1)
        assert np.allclose(secagg.dequantize(total, frac_bits=f, modulus_bits=k), 3 * v, atol=3 * 2.0**-f)
    with pytest.raises(CryptoError, match="too large"):
        secagg.quantize(np.array([100.0]), frac_bits=16, modulus_bits=32, max_summands=1000)
    with pytest.raises(CryptoError, match="NaN"):
        secagg.quantize(np.array([np.nan]), frac_bits=16, modulus_bits=32, max_summands=2)
