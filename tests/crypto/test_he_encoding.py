from __future__ import annotations

from typing import Any

import gmpy2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.executor import Executor
from sharelearn.crypto import fixedbase, he, modexp
from sharelearn.crypto.paillier_encoding import PackSpec, decode_signed, encode, pack, to_numbers, unpack

SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SPEC = PackSpec(slots=2, value_bits=48, headroom_bits=6, frac_bits=20)  # (g, h) pairs
MAX_INT = (1 << 1000) // 3


@settings(max_examples=50, deadline=None)
@given(x=st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=20), frac=st.integers(0, 60))
def test_fixed_point_round_trip_within_half_resolution(x: list[float], frac: int) -> None:
    modulus = 2 * MAX_INT + 12345
    arr = np.array(x)

    enc = encode(arr, frac_bits=frac, max_int=MAX_INT)
    residues = [v % modulus for v in enc.ints.ravel().tolist()]
    back = to_numbers(decode_signed(residues, modulus, MAX_INT), arr.shape, frac)

    if frac:
        assert np.all(np.abs(back - arr) <= 2.0 ** -(frac + 1))
    else:
        np.testing.assert_array_equal(back, np.rint(arr))


def test_overflow_band_and_bad_input_raise() -> None:
    modulus = 3 * 1000 + 1

    with pytest.raises(CryptoError, match="overflow"):
        decode_signed([1001], modulus, 1000)
    with pytest.raises(CryptoError, match="overflow"):
        encode(np.array([2.0**80]), frac_bits=30, max_int=2**100)
    with pytest.raises(CryptoError, match="overflow"):
        encode(np.array([1e300]), frac_bits=200, max_int=2**1000)
    with pytest.raises(CryptoError, match="non-finite"):
        encode(np.array([np.inf]), frac_bits=3, max_int=MAX_INT)
    with pytest.raises(CryptoError, match="dtype"):
        encode(np.array(["a"]), frac_bits=3, max_int=MAX_INT)
    assert decode_signed([1000, 2001], modulus, 1000) == [1000, -1000]


@SETTINGS
@given(
    g=st.lists(st.floats(-1000, 1000), min_size=1, max_size=8),
    h=st.floats(0, 1000),
    copies=st.integers(1, 64),
)
def test_pack_unpack_round_trip_with_additions(g: list[float], h: float, copies: int) -> None:
    vals = np.stack([np.array(g), np.full(len(g), h)], axis=1)

    packed = pack(vals, SPEC, max_int=MAX_INT)
    summed = [v * copies for v in packed.ints.tolist()]  # `copies` additions of the same plaintext
    out = unpack(summed, (len(g),), SPEC, copies)

    np.testing.assert_allclose(out, vals * copies, atol=copies * 2.0**-SPEC.frac_bits)


def test_pack_rejects_values_and_layouts_that_do_not_fit() -> None:
    with pytest.raises(CryptoError, match="slots"):
        pack(np.zeros((3, 3)), SPEC, max_int=MAX_INT)
    with pytest.raises(CryptoError, match="precision loss"):
        pack(np.array([[2.0**30, 0.0]]), SPEC, max_int=MAX_INT)
    with pytest.raises(CryptoError, match="bits"):
        pack(np.zeros((1, 2)), SPEC, max_int=2**90)
    with pytest.raises(ConfigError):
        PackSpec(slots=0, value_bits=8, headroom_bits=1)


def test_packed_ciphertexts_track_additions(he_keypair: Any) -> None:
    pk, sk = he_keypair
    spec = PackSpec(slots=3, value_bits=32, headroom_bits=3, frac_bits=12)
    vals = np.array([[0.5, -1.25, 3.0], [2.0, 2.0, -2.0], [-7.0, 0.0, 1.0]])
    c = he.encrypt(pk, pack(vals, spec, max_int=pk.max_int))
    indicator = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 1]])  # histogram bins over 3 rows

    hist = indicator @ c
    total = he.concatenate([c.sum(axis=0).reshape(1), c[:1] * 3])

    np.testing.assert_allclose(he.decrypt(sk, hist), indicator @ vals)
    np.testing.assert_allclose(he.decrypt(sk, total), [vals.sum(axis=0), vals[0] * 3])
    np.testing.assert_allclose(he.decrypt(sk, c + pack(vals, spec, max_int=pk.max_int)), 2 * vals)
    with pytest.raises(CryptoError, match="summands"):
        _ = c * 9
    with pytest.raises(CryptoError, match="summands"):
        he.add_all([c] * 9)
    with pytest.raises(CryptoError, match="packed"):
        _ = -c
    with pytest.raises(CryptoError, match="packed"):
        _ = c + 1.0


def test_scheme_selector_and_numpy_left_operands(ou_keypair: Any) -> None:
    for scheme in he.SCHEMES:
        pk, sk = he.keygen(scheme, 1024)
        c = he.encrypt(pk, np.array([1.5, -2.0]))
        np.testing.assert_allclose(he.decrypt(sk, np.array([1.0, 2.0]) + c * np.float64(2.0)), [4.0, -2.0])
        np.testing.assert_allclose(he.decrypt(sk, np.array([[1, 1]]) @ c), [-0.5])
    with pytest.raises(ConfigError, match="he_scheme"):
        he.keygen("rsa", 1024)


def test_powmod_backends_agree_with_gmpy2(backend: str, executor: Executor) -> None:
    rs = gmpy2.random_state(3)
    for mod_bits, exp_bits in ((1024, 512), (2048, 63), (2048, 300)):
        mod = gmpy2.mpz_urandomb(rs, mod_bits) | (gmpy2.mpz(1) << (mod_bits - 1)) | 1
        bases = [gmpy2.mpz_urandomb(rs, mod_bits) % mod for _ in range(11)]
        exps = [int(gmpy2.mpz_urandomb(rs, exp_bits)) for _ in range(11)]

        shared = modexp.powmod(bases, exps[0], mod, executor=executor)
        each = modexp.powmod(bases, exps, mod, executor=executor)

        assert shared == [gmpy2.powmod(b, exps[0], mod) for b in bases]
        assert each == [gmpy2.powmod(b, e, mod) for b, e in zip(bases, exps, strict=True)]


def test_multi_exp_table_and_inversion_helpers() -> None:
    rs = gmpy2.random_state(4)
    mod = gmpy2.next_prime(gmpy2.mpz(2) ** 512)
    bases = [gmpy2.mpz_urandomb(rs, 500) + 2 for _ in range(30)]
    exps = np.random.default_rng(0).integers(0, 2**40, size=(3, 30))
    exps[1, ::2] = 0

    out = modexp.multi_exp(bases, exps, mod)
    table = fixedbase.FixedBaseTable(bases[0], mod, 5)
    inv = modexp.batch_invert(bases, mod)

    for row, got in zip(exps, out, strict=True):
        want = gmpy2.mpz(1)
        for b, e in zip(bases, row.tolist(), strict=True):
            want = want * gmpy2.powmod(b, e, mod) % mod
        assert got == want
    assert table.pow([0, 1, 2**70 + 5]) == [gmpy2.powmod(bases[0], e, mod) for e in (0, 1, 2**70 + 5)]
    assert all(a * b % mod == 1 for a, b in zip(bases, inv, strict=True))
    with pytest.raises(CryptoError, match="not invertible"):
        modexp.batch_invert([gmpy2.mpz(0)], mod)
