from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import ecgroup, ot
from sharelearn.crypto.rng import SeededRng, random_bits, random_u64


@pytest.fixture(scope="module")
def base_keys() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """128 base OTs with the IKNP roles: the OT receiver is the base sender. Returns k0, k1, s, k_s."""
    s = ot.iknp_sender_choose()
    state, big_s = ot.base_sender_setup()
    rstate, msgs = ot.base_receiver_choose(big_s, s)
    k0, k1 = ot.base_sender_keys(state, msgs)
    return k0, k1, s, ot.base_receiver_keys(rstate)


def test_group_operations_are_consistent() -> None:
    a, b = ecgroup.random_scalar(), ecgroup.random_scalar()
    p = ecgroup.hash_to_group(b"alice")

    assert ecgroup.is_valid_point(p)
    assert ecgroup.scalar_mult(a, ecgroup.scalar_mult(b, p)) == ecgroup.scalar_mult(
        b, ecgroup.scalar_mult(a, p)
    )
    g_a, g_b = ecgroup.base_mult(a), ecgroup.base_mult(b)
    assert ecgroup.point_sub(ecgroup.point_add(g_a, g_b), g_b) == g_a
    assert ecgroup.hash_to_group(b"alice") == p != ecgroup.hash_to_group(b"bob")
    assert ecgroup.hash_to_group_many([b"alice", b"bob"]).shape == (2, 32)


def test_invalid_points_are_rejected() -> None:
    identity = (1).to_bytes(32, "little")
    with pytest.raises(CryptoError, match="prime-order"):
        ecgroup.scalar_mult(ecgroup.random_scalar(), identity)
    with pytest.raises(CryptoError, match="valid group element"):
        ot.base_receiver_choose(identity, [0, 1])


def test_base_ot_receiver_gets_only_its_choice(base_keys: tuple[np.ndarray, ...]) -> None:
    k0, k1, s, ks = base_keys

    assert np.array_equal(ks, np.where(s[:, None] == 1, k1, k0))
    assert not np.any(np.all(k0 == k1, axis=1))


def test_base_ot_is_deterministic_under_seeded_rng() -> None:
    def run(seed: int) -> np.ndarray:
        rng = SeededRng(seed)
        state, big_s = ot.base_sender_setup(rng)
        _, msgs = ot.base_receiver_choose(big_s, [1, 0, 1], rng)
        return ot.base_sender_keys(state, msgs)[0]

    assert np.array_equal(run(3), run(3))


def test_bit_transpose_matches_unpack_reference() -> None:
    m = 1003
    rows = np.frombuffer(random_u64(128 * 126 // 8 + 1).tobytes()[: 128 * 126], dtype=np.uint8).reshape(
        128, 126
    )

    out = ot.bit_transpose(rows, m)

    bits = np.unpackbits(rows, axis=1, bitorder="little")[:, :m]
    assert np.array_equal(out, np.packbits(bits.T, axis=1, bitorder="little"))


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 5))
def test_iknp_correlation_holds(base_keys: tuple[np.ndarray, ...], m: int, batch: int) -> None:
    k0, k1, s, ks = base_keys
    r = random_bits(m)

    u, t = ot.iknp_receiver_extend(r, k0, k1, batch=batch)
    q = ot.iknp_sender_extend(s, ks, u, m, batch=batch)

    s_block = np.packbits(s, bitorder="little").view(np.uint64)
    assert np.array_equal(q, t ^ np.where(r[:, None] == 1, s_block, np.uint64(0)))


def test_chosen_message_ot_100k(base_keys: tuple[np.ndarray, ...]) -> None:
    k0, k1, s, ks = base_keys
    m = 100_000
    r = random_bits(m)
    x0, x1 = random_u64((m, 2)), random_u64((m, 2))

    u, t = ot.iknp_receiver_extend(r, k0, k1, batch=9)
    q = ot.iknp_sender_extend(s, ks, u, m, batch=9)
    y0, y1 = ot.ot_sender_encrypt(q, s, x0, x1, batch=9)
    got = ot.ot_receiver_decrypt(t, r, y0, y1, batch=9)

    assert np.array_equal(got, np.where(r[:, None] == 1, x1, x0))
    # the unchosen message stays masked
    other = np.where(r[:, None] == 1, y0, y1) ^ ot.rot_receiver(t, batch=9)
    assert not np.any(np.all(other == np.where(r[:, None] == 1, x0, x1), axis=1))


def test_correlated_ot_gives_labels_with_delta(base_keys: tuple[np.ndarray, ...]) -> None:
    k0, k1, s, ks = base_keys
    m = 5000
    r = random_bits(m)
    delta = random_u64(2)

    u, t = ot.iknp_receiver_extend(r, k0, k1, batch=11)
    q = ot.iknp_sender_extend(s, ks, u, m, batch=11)
    zero, corr = ot.cot_sender(q, s, delta, batch=11)
    labels = ot.cot_receiver(t, r, corr, batch=11)

    assert np.array_equal(labels, zero ^ np.where(r[:, None] == 1, delta, np.uint64(0)))


def test_mismatched_batch_breaks_the_transfer(base_keys: tuple[np.ndarray, ...]) -> None:
    k0, k1, s, ks = base_keys
    r = random_bits(256)

    u, t = ot.iknp_receiver_extend(r, k0, k1, batch=1)
    q = ot.iknp_sender_extend(s, ks, u, 256, batch=2)

    assert not np.array_equal(ot.rot_receiver(t, batch=1), ot.rot_sender(q, s, batch=1)[0])


def test_bad_inputs_raise(base_keys: tuple[np.ndarray, ...]) -> None:
    k0, k1, s, ks = base_keys
    with pytest.raises(CryptoError, match="bits"):
        ot.iknp_receiver_extend(np.array([0, 2]), k0, k1)
    with pytest.raises(CryptoError, match="seeds0"):
        ot.iknp_receiver_extend([0, 1], k0[:5], k1)
    with pytest.raises(CryptoError, match="u must be"):
        ot.iknp_sender_extend(s, ks, np.zeros((128, 3), dtype=np.uint8), 100)
