"""The native kernels and their portable fallback compute the same function (both paths, one machine)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import gmpy2
import numpy as np
import pytest

from sharelearn.crypto import fixedbase, kernels, maskadd, modexp, prg, x25519
from sharelearn.crypto.kernels import mbxmont

native = pytest.mark.skipif(not kernels.is_available(), reason="libcrypto_mb is not usable on this CPU")
MOD = gmpy2.next_prime(gmpy2.mpz(random.Random(5).getrandbits(1023)) | (1 << 1022)) * 3  # odd 1024-bit-ish


def _both(fn: Callable[[], Any]) -> tuple[Any, Any]:
    """`fn()` on the native kernels, then on the portable path."""
    fast = fn()
    kernels.force_portable(True)
    try:
        return fast, fn()
    finally:
        kernels.force_portable(False)


def test_force_portable_turns_every_loader_off(portable: None) -> None:  # conftest fixture
    assert kernels.is_portable()
    assert kernels.load() is None and kernels.load_ippcp() is None
    assert mbxmont.kernel(1024) is None
    assert prg.keystream_backend() == "openssl"
    assert maskadd.backend(np.uint64) == "openssl"
    assert x25519.backend_name() == "openssl"


@native
def test_powmod_native_and_portable_agree() -> None:
    rnd = random.Random(7)
    bases = [gmpy2.mpz(rnd.getrandbits(1000)) % MOD for _ in range(19)]
    exps = [rnd.getrandbits(200) for _ in range(19)]

    fast, slow = _both(lambda: modexp.powmod(bases, exps, MOD))

    assert fast == slow == [gmpy2.powmod(b, e, MOD) for b, e in zip(bases, exps, strict=True)]


@native
def test_fixed_base_table_native_and_portable_agree() -> None:
    rnd = random.Random(8)
    exps = [rnd.getrandbits(224) for _ in range(21)]

    fast, slow = _both(lambda: fixedbase.table(3, MOD, 8).pow(exps))

    assert fast == slow == [gmpy2.powmod(3, e, MOD) for e in exps]


@native
def test_x25519_native_and_portable_agree() -> None:
    points = x25519.hash_to_point([b"id-%d" % i for i in range(13)])
    scalar = bytes(range(32))

    fast, slow = _both(lambda: x25519.scalarmult(scalar, points))

    assert fast.shape == (13, 32)
    np.testing.assert_array_equal(fast, slow)


def test_keystream_and_masks_native_and_portable_agree() -> None:
    key, counter = bytes(range(16)), bytes(15) + b"\x01"
    y = np.arange(10_001, dtype=np.uint64)

    def masked() -> tuple[bytes, Any]:
        out = y.copy()
        maskadd.MaskAdder(y.size, np.uint64).add(out, [key, key[::-1]], [1, -1], counter)
        return prg.KeystreamWriter(4096).write(key, counter).tobytes(), out

    (ks_fast, y_fast), (ks_slow, y_slow) = _both(masked)

    assert ks_fast == ks_slow and len(set(ks_fast)) > 200
    np.testing.assert_array_equal(y_fast, y_slow)
    assert not np.array_equal(y_fast, y)
