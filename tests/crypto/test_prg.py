from __future__ import annotations

import os
import random

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import prg, rng
from sharelearn.crypto.kernels import mbx


def test_expand_matches_aes_ctr_reference() -> None:
    seed = bytes(range(16))

    out = prg.expand(seed, 100, stream=3)

    iv = (3).to_bytes(8, "big") + bytes(8)
    ref = Cipher(algorithms.AES(seed), modes.CTR(iv)).encryptor().update(bytes(100))
    assert out == ref


def test_expand_is_deterministic_and_streams_differ() -> None:
    seed = os.urandom(32)

    a, b, c = prg.expand(seed, 64), prg.expand(seed, 64), prg.expand(seed, 64, stream=1)

    assert a == b
    assert a != c
    assert prg.expand(seed, 10) == a[:10]  # a prefix of the same stream


def test_chacha20_expand_matches_reference() -> None:
    seed = bytes(range(32))

    out = prg.chacha20_expand(seed, 77, stream=5)

    nonce = bytes(4) + (5).to_bytes(12, "little")
    ref = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor().update(bytes(77))
    assert out == ref


def test_expand_u64_shape_and_spread() -> None:
    x = prg.expand_u64(os.urandom(16), (1000, 3))

    assert x.shape == (1000, 3) and x.dtype == np.uint64
    assert x.flags.writeable
    assert 0.4 < float(np.mean(x >> np.uint64(63))) < 0.6


@pytest.mark.parametrize("seed", [b"", bytes(15), bytes(33)])
def test_expand_rejects_bad_seed(seed: bytes) -> None:
    with pytest.raises(CryptoError, match="seed"):
        prg.expand(seed, 10)


def test_fixed_key_aes_is_a_permutation_matching_ecb() -> None:
    blocks = np.frombuffer(os.urandom(16 * 50), dtype=np.uint8).reshape(50, 16)

    out = prg.fixed_key_aes(blocks)

    ref = Cipher(algorithms.AES(prg.FIXED_KEY), modes.ECB()).encryptor().update(blocks.tobytes())
    assert out.tobytes() == ref
    assert np.array_equal(prg.fixed_key_aes_u64(blocks.view(np.uint64)).view(np.uint8), out)


def test_tccr_into_equals_tccr() -> None:
    x = rng.random_u64((3, 5, 2))
    tweak = rng.random_u64((3, 5))
    expect = prg.tccr(x, tweak, tweak_hi=7)

    work = x.copy()
    prg.tccr_into(work, tweak, np.empty(2 * x.size + 4, dtype=np.uint64), tweak_hi=7)

    assert np.array_equal(work, expect)
    assert not np.array_equal(prg.tccr(x, tweak + np.uint64(1)), expect)


def test_seeded_rng_is_reproducible() -> None:
    a, b = rng.SeededRng(42), rng.SeededRng(42)

    assert rng.random_bytes(40, a) == rng.random_bytes(40, b)
    assert np.array_equal(rng.random_u64(7, a), rng.random_u64(7, b))
    assert rng.random_bytes(40, a) != rng.random_bytes(40, rng.SeededRng(43))
    assert "test-only" in repr(a)


def test_any_callable_is_an_rng() -> None:
    a = rng.random_u64(5, random.Random(1).randbytes)

    assert np.array_equal(a, rng.random_u64(5, random.Random(1).randbytes))
    assert len(rng.SeededRng(1)(9)) == 9


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 20000))
def test_random_bytes_has_requested_length(n: int) -> None:
    assert len(rng.random_bytes(n)) == n
    assert rng.random_bytes_array(n).size == n


def test_random_bits_are_bits() -> None:
    bits = rng.random_bits((3, 1001))

    assert bits.shape == (3, 1001)
    assert set(np.unique(bits).tolist()) <= {0, 1}
    assert 0.4 < bits.mean() < 0.6


@pytest.mark.parametrize("path", ["ipp", "openssl"])
@pytest.mark.parametrize("n_bytes", [0, 1, 17, 4096, 100_003])
def test_keystream_writer_matches_openssl_ctr_on_both_paths(path: str, n_bytes: int) -> None:
    if path == "ipp" and prg._ipp_aes() is None:
        pytest.skip("ipp-crypto's AES is not installed or failed its known-answer check")
    mbx.force_portable(path == "openssl")
    try:
        writer = prg.KeystreamWriter(n_bytes)
        assert writer.backend == path
        # GCM's first counter (the secure-aggregation masks), a low word about to carry, and an
        # arbitrary one; AES-128 and AES-256; then the first key again (no state kept between keys)
        counters = [bytes(12) + b"\x00\x00\x00\x02", bytes(8) + b"\x00" * 4 + b"\xff" * 4, os.urandom(16)]
        keys = [os.urandom(16), os.urandom(32), os.urandom(16)]
        for key, counter in [*zip(keys, counters, strict=True), (keys[0], counters[0])]:
            want = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor().update(bytes(n_bytes))
            assert writer.write(key, counter).tobytes() == want
    finally:
        mbx.force_portable(False)


def test_keystream_writer_refuses_bad_keys_and_counters() -> None:
    writer = prg.KeystreamWriter(32)
    with pytest.raises(CryptoError, match="16 or 32 bytes"):
        writer.write(bytes(24), bytes(16))
    with pytest.raises(CryptoError, match="counter block must be 16 bytes"):
        writer.write(bytes(16), bytes(12))
