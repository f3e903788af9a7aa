"""`crypto.maskadd`: every backend adds exactly sum_j s_j * AES-CTR(key_j) into the words."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import maskadd, prg
from sharelearn.crypto.kernels import mbx

COUNTER = bytes(12) + b"\x00\x00\x00\x02"


@pytest.fixture(params=["fused", "ipp", "openssl"])
def mask_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The numba + ipp kernel, ipp with numpy adds, and OpenSSL with numpy adds."""
    mbx.force_portable(request.param == "openssl")
    maskadd.set_fused(request.param == "fused")
    try:
        if any(maskadd.backend(t) != request.param for t in (np.uint32, np.uint64)):
            pytest.skip(f"the {request.param} backend is not available on this machine")
        yield request.param
    finally:
        mbx.force_portable(False)
        maskadd.set_fused(True)


def _reference(y: np.ndarray, keys: list[bytes], signs: list[int], counter: bytes) -> np.ndarray:
    """The definition, with OpenSSL's CTR mode and Python's modular arithmetic."""
    bits = 8 * y.dtype.itemsize
    out = [int(v) for v in y]
    for key, sign in zip(keys, signs, strict=True):
        enc = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
        words = np.frombuffer(enc.update(bytes(y.nbytes)), dtype=y.dtype.newbyteorder("<"))
        out = [(a + sign * int(w)) % (1 << bits) for a, w in zip(out, words, strict=True)]
    return np.array(out, dtype=y.dtype)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("length", [1, 5, 4096, 4097, 3 * 4096 + 3])
def test_every_backend_matches_the_definition(mask_backend: str, dtype: type, length: int) -> None:
    rng = np.random.default_rng(length)
    y = rng.integers(0, np.iinfo(dtype).max, length, dtype=dtype, endpoint=True)
    keys = [os.urandom(16) for _ in range(4)]
    signs = [1, -1, -1, 1]
    want = _reference(y, keys, signs, COUNTER)

    adder = maskadd.MaskAdder(length, dtype)
    adder.add(y, keys, signs, COUNTER)

    assert adder.backend == mask_backend
    assert np.array_equal(y, want)


def test_aes256_keys_a_carrying_counter_and_buffer_reuse(mask_backend: str) -> None:
    length = 2 * 4096 + 17
    adder = maskadd.MaskAdder(length, np.uint32)
    counter = bytes(15) + b"\xfe"  # carries out of its low byte after two blocks
    for round_ in range(3):  # the adder's buffers are reused across calls, with fewer keys each time
        keys = [os.urandom(32) for _ in range(5 - round_)]
        signs = [(-1) ** j for j in range(len(keys))]
        y = np.arange(length, dtype=np.uint32)
        want = _reference(y, keys, signs, counter)
        adder.add(y, keys, signs, counter)
        assert np.array_equal(y, want)


def test_masks_cancel_and_no_keys_is_a_no_op(mask_backend: str) -> None:
    y = np.arange(98_453, dtype=np.uint32)
    before = y.copy()
    keys = [os.urandom(16) for _ in range(3)]
    adder = maskadd.MaskAdder(y.size, np.uint32)

    adder.add(y, [], [], COUNTER)
    assert np.array_equal(y, before)
    adder.add(y, keys, [1, 1, -1], COUNTER)
    assert not np.array_equal(y, before)
    adder.add(y, keys, [-1, -1, 1], COUNTER)
    assert np.array_equal(y, before)


def test_bad_input_is_refused() -> None:
    adder = maskadd.MaskAdder(10, np.uint32)
    key = os.urandom(16)
    with pytest.raises(CryptoError, match="10 uint32 words"):
        adder.add(np.zeros(10, np.uint64), [key], [1], COUNTER)
    with pytest.raises(CryptoError, match="10 uint32 words"):
        adder.add(np.zeros(20, np.uint32)[::2], [key], [1], COUNTER)
    with pytest.raises(CryptoError, match="sign"):
        adder.add(np.zeros(10, np.uint32), [key], [2], COUNTER)
    with pytest.raises(CryptoError, match="sign"):
        adder.add(np.zeros(10, np.uint32), [key, key], [1], COUNTER)
    with pytest.raises(CryptoError, match=r"must all be 16 or all 32 bytes, got \[16, 32\]"):
        adder.add(np.zeros(10, np.uint32), [key, key + key], [1, 1], COUNTER)
    with pytest.raises(CryptoError, match="counter"):
        adder.add(np.zeros(10, np.uint32), [key], [1], COUNTER[:8])
    with pytest.raises(CryptoError, match="uint32 or uint64"):
        maskadd.MaskAdder(10, np.int32)


def test_two_pass_backend_matches_keystream_writer() -> None:
    # The masks secure aggregation used before the fused kernel: KeystreamWriter's words.
    key = os.urandom(16)
    y = np.zeros(1000, dtype=np.uint64)
    maskadd.MaskAdder(1000, np.uint64).add(y, [key], [1], COUNTER)
    assert np.array_equal(y, prg.KeystreamWriter(8000).write(key, COUNTER).view("<u8"))


def test_a_kernel_that_fails_to_build_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    if maskadd.backend(np.uint64) != "fused":
        pytest.skip("no fused kernel here to fail")

    def broken(kernel: object, dtype: object) -> bool:
        raise RuntimeError("LLVM ran out of registers")

    monkeypatch.setattr(maskadd, "_known_answer", broken)
    monkeypatch.setattr(maskadd, "_CHECKED", {})
    with pytest.warns(RuntimeWarning, match="fused kernel for uint64 words failed"):
        adder = maskadd.MaskAdder(100, np.uint64)
    assert adder.backend == prg.keystream_backend()
    y = np.zeros(100, dtype=np.uint64)
    adder.add(y, [bytes(16)], [1], COUNTER)
    assert np.array_equal(y, _reference(np.zeros(100, dtype=np.uint64), [bytes(16)], [1], COUNTER))
