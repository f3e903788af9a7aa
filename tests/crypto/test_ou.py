from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharelearn.core import codec
from sharelearn.core.errors import CryptoError
from sharelearn.core.executor import Executor
from sharelearn.crypto import he

# `backend` only toggles a global switch, so sharing it across examples is intended.
SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
INTS = st.integers(-(2**60), 2**60)


def test_keygen_shapes_and_secret_free_repr(ou_keypair: Any) -> None:
    pk, sk = ou_keypair

    text = repr(pk) + repr(sk)

    assert sk.p * sk.p * sk.q == pk.n and sk.p.bit_length() == pk.plain_bits
    assert pk.max_int < sk.p // 3
    assert str(sk.p) not in text and pk.key_id in text


@SETTINGS
@given(a=st.lists(INTS, min_size=1, max_size=12), b=INTS, k=st.integers(-(2**40), 2**40))
def test_ou_is_additively_homomorphic(ou_keypair: Any, backend: str, a: list[int], b: int, k: int) -> None:
    pk, sk = ou_keypair
    x = np.array(a, dtype=np.int64)
    c = he.encrypt(pk, x)

    total, scaled = he.decrypt(sk, c + he.encrypt(pk, [b])), he.decrypt(sk, c * k)

    assert total.tolist() == [v + b for v in a]
    assert scaled.tolist() == [v * k for v in a]


@SETTINGS
@given(rows=st.integers(1, 6), cols=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_ou_plain_matmul(ou_keypair: Any, rows: int, cols: int, seed: int) -> None:
    pk, sk = ou_keypair
    rng = np.random.default_rng(seed)
    x = rng.integers(-1000, 1000, size=(rows, cols))
    v = rng.uniform(-10, 10, size=rows)

    got = he.decrypt(sk, x.T @ he.encrypt(pk, v, frac_bits=24))

    np.testing.assert_allclose(got, x.T @ v, atol=np.abs(x).sum() * 2.0**-24)


def test_ou_large_plaintexts_use_lazily_grown_tables(ou_keypair: Any, backend: str) -> None:
    pk, sk = ou_keypair
    v = np.array([pk.max_int, -pk.max_int, 2**200 + 7, -(2**150)], dtype=object)

    got = he.decrypt(sk, he.encrypt(pk, v))

    assert got.tolist() == v.tolist()


def test_ou_overflow_band_detects_wraparound(ou_keypair: Any) -> None:
    pk, sk = ou_keypair
    c = he.encrypt(pk, [pk.max_int])

    with pytest.raises(CryptoError, match="overflow"):
        he.decrypt(sk, c * 2)
    with pytest.raises(CryptoError, match="overflow"):
        he.encrypt(pk, [pk.max_int + 1])


def test_ou_worker_processes_and_rerandomize(ou_keypair: Any, executor: Executor) -> None:
    pk, sk = ou_keypair
    v = np.arange(-250, 250)

    c = he.encrypt(pk, v, executor=executor)
    r = c.rerandomize(executor=executor)

    np.testing.assert_array_equal(he.decrypt(sk, r), v)
    assert c.ct[0] != r.ct[0]


def test_ou_wire_round_trip(ou_keypair: Any) -> None:
    pk, sk = ou_keypair
    c = he.encrypt(pk, np.array([[1, -2], [3, -4]]))

    pk2 = he.public_key_from_wire(codec.decode(codec.encode(pk.to_wire())))
    back = he.EncArray.from_wire(codec.decode(codec.encode(c.to_wire())), pk2)

    np.testing.assert_array_equal(he.decrypt(sk, back), [[1, -2], [3, -4]])


def test_schemes_do_not_mix(ou_keypair: Any, paillier_keypair: Any) -> None:
    c_ou = he.encrypt(ou_keypair[0], [1])
    c_p = he.encrypt(paillier_keypair[0], [1])

    with pytest.raises(CryptoError):
        _ = c_ou + c_p
    with pytest.raises(CryptoError):
        he.decrypt(paillier_keypair[1], c_ou)
