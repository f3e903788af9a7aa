from __future__ import annotations

import random
from typing import Any

import gmpy2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharelearn.core import codec
from sharelearn.core.errors import CryptoError, DecodeError
from sharelearn.core.executor import Executor
from sharelearn.crypto import he, modexp, paillier
from sharelearn.crypto.he import EncArray
from sharelearn.runtime import procpool
from sharelearn.runtime.executors import ProcessExecutor

INTS = st.integers(-(2**60), 2**60)
# `backend` only toggles a global switch, so sharing it across examples is intended.
SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_keygen_gives_exact_sizes_and_hides_secrets(paillier_keypair: Any) -> None:
    pk, sk = paillier_keypair

    text = repr(pk) + repr(sk)

    assert pk.n.bit_length() == 1024 and pk.n2.bit_length() == 2048
    assert str(sk.p) not in text and str(sk.q) not in text and pk.key_id in text
    assert pk.rand_bits == 2 * modexp.security_bits(1024)


@SETTINGS
@given(a=st.lists(INTS, min_size=1, max_size=12), b=INTS)
def test_add_is_homomorphic(paillier_keypair: Any, backend: str, a: list[int], b: int) -> None:
    pk, sk = paillier_keypair
    x = np.array(a, dtype=np.int64)

    ca, cb = he.encrypt(pk, x), he.encrypt(pk, [b])

    np.testing.assert_array_equal(he.decrypt(sk, ca + cb), x + b)
    np.testing.assert_array_equal(he.decrypt(sk, ca - cb), x - b)
    np.testing.assert_array_equal(he.decrypt(sk, ca + 7), x + 7)
    np.testing.assert_array_equal(he.decrypt(sk, 7 - ca), 7 - x)


@SETTINGS
@given(a=st.lists(INTS, min_size=8, max_size=20), k=st.integers(-(2**62), 2**62))
def test_scalar_mul_is_homomorphic(paillier_keypair: Any, backend: str, a: list[int], k: int) -> None:
    pk, sk = paillier_keypair
    c = he.encrypt(pk, np.array(a, dtype=np.int64))

    out = he.decrypt(sk, c * k)

    assert out.tolist() == [k * v for v in a]


def test_elementwise_scalars_with_mixed_signs(paillier_keypair: Any, backend: str) -> None:
    pk, sk = paillier_keypair
    x = np.arange(-8, 8, dtype=np.int64)
    k = np.array([(-1) ** i * (i * 12345 + 1) for i in range(16)], dtype=np.int64)

    out = he.decrypt(sk, he.encrypt(pk, x) * k)

    np.testing.assert_array_equal(out, x * k)


@SETTINGS
@given(
    x=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=10),
    s=st.floats(-100, 100),
    frac=st.integers(8, 40),
)
def test_float_fixed_point_within_resolution(
    paillier_keypair: Any, x: list[float], s: float, frac: int
) -> None:
    pk, sk = paillier_keypair
    arr = np.array(x)
    c = he.encrypt(pk, arr, frac_bits=frac)
    res = 2.0**-frac

    got, got_mul = he.decrypt(sk, c + 0.5), he.decrypt(sk, c.mul(s, frac_bits=frac))

    np.testing.assert_allclose(got, arr + 0.5, rtol=0, atol=res)
    # |round(x)*round(s) - x*s| <= |x| e + |s| e + e^2 with e = res / 2
    bound = (np.abs(arr) + abs(s) + 1) * res
    assert np.all(np.abs(got_mul - arr * s) <= bound)


@SETTINGS
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    big=st.booleans(),
)
def test_plain_matmul_equals_plain_product(
    paillier_keypair: Any, rows: int, cols: int, seed: int, big: bool
) -> None:
    pk, sk = paillier_keypair
    rng = np.random.default_rng(seed)
    lim = 2**40 if big else 50
    x = rng.integers(-lim, lim, size=(rows, cols))
    v = rng.integers(-(2**20), 2**20, size=rows)
    c = he.encrypt(pk, v)

    got = he.decrypt(sk, x.T @ c)

    assert got.tolist() == (x.T.astype(object) @ v.astype(object)).tolist()


def test_matmul_shapes_follow_numpy(paillier_keypair: Any) -> None:
    pk, sk = paillier_keypair
    v = np.arange(12).reshape(4, 3) - 5
    w = np.arange(8).reshape(4, 2) - 3
    c = he.encrypt(pk, v)

    left, right, vec = w.T @ c, c.T @ w, c[:, 0] @ w

    np.testing.assert_array_equal(he.decrypt(sk, left), w.T @ v)
    np.testing.assert_array_equal(he.decrypt(sk, right), v.T @ w)
    np.testing.assert_array_equal(he.decrypt(sk, vec), v[:, 0] @ w)
    np.testing.assert_allclose(he.decrypt(sk, he.matmul_plain(w.T * 0.5, c)), 0.5 * w.T @ v)


def test_shapes_indexing_sum_and_concatenate(paillier_keypair: Any) -> None:
    pk, sk = paillier_keypair
    v = np.arange(24).reshape(2, 3, 4) - 10
    c = he.encrypt(pk, v)

    parts = {
        "idx": (c[1, :, ::2], v[1, :, ::2]),
        "sum": (c.sum(), v.sum()),
        "sum1": (c.sum(axis=1), v.sum(axis=1)),
        "sum-1": (c.sum(axis=-1), v.sum(axis=-1)),
        "cat": (he.concatenate([c, c[:1]], axis=0), np.concatenate([v, v[:1]])),
        "neg": (-c, -v),
        "bcast": (c + np.arange(4), v + np.arange(4)),
    }

    assert c.shape == (2, 3, 4) and len(c) == 2 and c.ndim == 3 and c.size == 24
    for name, (enc, plain) in parts.items():
        assert enc.shape == plain.shape, name
        np.testing.assert_array_equal(he.decrypt(sk, enc), plain, err_msg=name)


def test_mixed_scales_are_aligned(paillier_keypair: Any) -> None:
    pk, sk = paillier_keypair
    a = he.encrypt(pk, np.array([1.5, -2.25]), frac_bits=8)
    b = he.encrypt(pk, np.array([3, 4]))

    out = he.decrypt(sk, he.add_all([a, b, a * 2]))

    np.testing.assert_allclose(out, [7.5, -2.75])


def test_rerandomize_changes_ciphertexts_not_plaintexts(paillier_keypair: Any) -> None:
    pk, sk = paillier_keypair
    c = he.encrypt(pk, np.arange(5))

    r = c.rerandomize()

    assert all(a != b for a, b in zip(c.ct.tolist(), r.ct.tolist(), strict=True))
    np.testing.assert_array_equal(he.decrypt(sk, r), np.arange(5))


def test_seeded_rng_is_deterministic(paillier_keypair: Any) -> None:
    pk, _ = paillier_keypair

    a = he.encrypt(pk, [1, 2], rng=random.Random(5).randbytes)
    b = he.encrypt(pk, [1, 2], rng=random.Random(5).randbytes)

    assert a.ct.tolist() == b.ct.tolist()


def test_mbx_and_portable_decrypt_agree(paillier_keypair: Any, backend: str, threads: Executor) -> None:
    pk, sk = paillier_keypair
    v = np.arange(-20, 20)

    c = he.encrypt(pk, v, executor=threads)

    np.testing.assert_array_equal(he.decrypt(sk, c, executor=threads), v)
    product = c.mul(-(2**40) + 3, executor=threads)
    np.testing.assert_array_equal(he.decrypt(sk, product), v * (-(2**40) + 3))


def test_worker_processes_encrypt_big_batches(
    paillier_keypair: Any, portable: None, threads: Executor
) -> None:
    pk, sk = paillier_keypair
    v = np.arange(-300, 300)

    c = he.encrypt(pk, v, executor=threads)

    np.testing.assert_array_equal(he.decrypt(sk, c), v)


def test_every_executor_gives_the_same_ciphertexts(paillier_keypair: Any, executor: Executor) -> None:
    pk, sk = paillier_keypair
    v = np.arange(-300, 300)
    serial = he.encrypt(pk, v, rng=random.Random(11).randbytes)

    c = he.encrypt(pk, v, rng=random.Random(11).randbytes, executor=executor)

    assert c.ct.tolist() == serial.ct.tolist()
    np.testing.assert_array_equal(he.decrypt(sk, c, executor=executor), v)
    assert c.mul(7, executor=executor).ct.tolist() == serial.mul(7).ct.tolist()


def test_overflow_raises(paillier_keypair: Any) -> None:
    pk, sk = paillier_keypair
    c = he.encrypt(pk, [pk.max_int // 2 + 1])

    with pytest.raises(CryptoError, match="overflow"):
        he.encrypt(pk, [pk.max_int + 1])
    with pytest.raises(CryptoError, match="overflow"):
        he.decrypt(sk, c * 3)
    with pytest.raises(CryptoError, match="non-finite"):
        he.encrypt(pk, np.array([1.0, np.nan]))


def test_wrong_key_is_rejected(paillier_keypair: Any) -> None:
    pk, _ = paillier_keypair
    other_pk, other_sk = paillier.keygen(1024, rng=random.Random(9).randbytes)
    c, d = he.encrypt(pk, [1]), he.encrypt(other_pk, [1])

    with pytest.raises(CryptoError, match="different keys"):
        _ = c + d
    with pytest.raises(CryptoError, match="key"):
        he.decrypt(other_sk, c)
    with pytest.raises(CryptoError, match="cannot multiply two ciphertexts"):
        _ = c * d


def test_wire_round_trip_through_codec(paillier_keypair: Any) -> None:
    pk, sk = paillier_keypair
    c = he.encrypt(pk, np.arange(6).reshape(2, 3) * 0.25)

    pk2 = paillier.PublicKey.from_wire(codec.decode(codec.encode(pk.to_wire())))
    back = EncArray.from_wire(codec.decode(codec.encode(c.to_wire())), pk2)

    assert back.shape == (2, 3) and back.frac_bits == c.frac_bits and pk2.key_id == pk.key_id
    np.testing.assert_allclose(he.decrypt(sk, back), np.arange(6).reshape(2, 3) * 0.25)
    assert len(c.to_wire()["data"]) == 6 * 256  # type: ignore[arg-type]


def _tamper(wire: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**wire, **changes}


def test_malformed_wire_data_is_rejected(paillier_keypair: Any) -> None:
    pk, _ = paillier_keypair
    wire: dict[str, Any] = he.encrypt(pk, [1, 2]).to_wire()
    too_big = int(pk.n2).to_bytes(256, "little")
    cases: list[tuple[Any, type[Exception], str]] = [
        (_tamper(wire, data=wire["data"][:-1]), DecodeError, "bytes"),
        (_tamper(wire, data=too_big + wire["data"][256:]), DecodeError, "not in"),
        (_tamper(wire, data=bytes(256) + wire["data"][256:]), DecodeError, "not in"),
        (_tamper(wire, shape=[-1]), DecodeError, "shape"),
        (_tamper(wire, shape="2"), DecodeError, "shape"),
        (_tamper(wire, width=255), DecodeError, "width"),
        (_tamper(wire, key_id="0" * 16), CryptoError, "key"),
        (_tamper(wire, pack=[1, 2]), DecodeError, "pack"),
        ({k: v for k, v in wire.items() if k != "frac_bits"}, DecodeError, "frac_bits"),
        ([1, 2], DecodeError, "map"),
    ]

    for data, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            EncArray.from_wire(data, pk)


def test_invalid_public_keys_are_rejected(paillier_keypair: Any) -> None:
    pk, _ = paillier_keypair
    wire = pk.to_wire()

    with pytest.raises(CryptoError):
        paillier.PublicKey.from_wire({**wire, "n": (int(pk.n) + 1).to_bytes(128, "big")})
    with pytest.raises(CryptoError, match="rand_bits"):
        paillier.PublicKey.from_wire({**wire, "rand_bits": 64})
    with pytest.raises(DecodeError):
        paillier.PublicKey.from_wire({**wire, "n": 5})
    with pytest.raises(CryptoError):
        paillier.PrivateKey(pk, gmpy2.mpz(3), gmpy2.mpz(5))


def test_dead_worker_process_falls_back_to_in_process(
    paillier_keypair: Any, portable: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pk, sk = paillier_keypair
    monkeypatch.setattr(procpool, "_ENTRY", "import sys; sys.exit(3)")
    v = np.arange(400)

    with ProcessExecutor(2) as dying:
        c = he.encrypt(pk, v, executor=dying)

    np.testing.assert_array_equal(he.decrypt(sk, c), v)
    assert "redone in-process" in caplog.text
