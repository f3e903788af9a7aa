"""The IFMA Montgomery path of fixed-base encryption agrees bit for bit with the gmpy2 path."""

from __future__ import annotations

import random
from typing import Any

import gmpy2
import numpy as np
import pytest

from sharelearn.core.executor import Executor
from sharelearn.crypto.kernels import mbx, mbxmont

pytestmark = pytest.mark.skipif(not mbx.is_available(), reason="libcrypto_mb is not usable on this CPU")


def test_digit_conversion_round_trips() -> None:
    rnd = random.Random(3)
    for ndigits in (10, 20, 40, 79):
        values = [gmpy2.mpz(rnd.getrandbits(52 * ndigits - rnd.randrange(60))) for _ in range(33)]
        values += [gmpy2.mpz(0), gmpy2.mpz(1), (gmpy2.mpz(1) << (52 * ndigits)) - 1]

        digits = mbxmont.to_digits(values, ndigits)

        assert digits.shape == (len(values), ndigits)
        assert int(digits.max()) < 2**52
        assert mbxmont.from_digits(digits) == values


def test_kernel_sizes_cover_the_key_sizes_and_stop_at_the_largest() -> None:
    assert mbxmont.digit_count(1024) == 20
    assert mbxmont.digit_count(2048) == 40
    assert mbxmont.digit_count(4096) == 79
    assert mbxmont.digit_count(4107) is None  # R = 2^(52 L) must exceed 4M
    assert mbxmont.kernel(6144) is None


def test_a_wrong_kernel_fails_the_self_test() -> None:
    def zeros(out: int, a: int, b: int, m: int, k0: int) -> None:
        return None  # leaves `out` as allocated: not a product

    assert not mbxmont._self_test(zeros, 20)


def _encrypt_both(pk: Any, ms: list[int], executor: Executor | None) -> tuple[list[Any], list[Any]]:
    fast = pk.encrypt_ints(ms, rng=random.Random(9).randbytes, executor=executor)
    mbx.force_portable(True)
    try:
        slow = pk.encrypt_ints(ms, rng=random.Random(9).randbytes)
    finally:
        mbx.force_portable(False)
    return fast, slow


@pytest.mark.parametrize("count", [1, 7, 8, 9, 131])
def test_same_ciphertexts_as_gmpy2(he_keypair: Any, count: int) -> None:
    pk, _ = he_keypair
    rnd = random.Random(count)
    ms = [rnd.randrange(-pk.max_int, pk.max_int) for _ in range(count)]
    ms[0] = 0

    fast, slow = _encrypt_both(pk, ms, None)

    assert fast == slow


def test_worker_processes_give_the_same_ciphertexts(he_keypair: Any, threads: Executor) -> None:
    pk, sk = he_keypair
    ms = np.arange(-700, 700).tolist()  # big enough to go to a worker process

    fast, slow = _encrypt_both(pk, ms, threads)

    assert fast == slow
    assert sk.decrypt_residues(fast[:3]) == [m % sk.plaintext_modulus for m in ms[:3]]
