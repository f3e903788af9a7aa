"""Batched modular exponentiation for the additive HE schemes (Paillier, Okamoto–Uchiyama).

* `powmod` uses Intel's multi-buffer `mbx_exp*_mb8` (`kernels.mbexp`, AVX512-IFMA) when
  `kernels.mbx.load()` finds it: 8 independent exponentiations per call, releasing the GIL, so a
  thread executor uses every core; else gmpy2. Each call pays ~50 us (4096-bit) for the
  Montgomery set-up, so tiny exponents stay on gmpy2, whose `powmod_base_list` also releases the
  GIL. gmpy2's `*`, `%` and `powmod` do not (measured: 2 threads run slower than 1).
* `multi_exp`: Pippenger's bucket method for prod_i c_i^(x_i): one multiplication per non-zero
  digit plus 2^(w+1) per window, instead of one full exponentiation per term.
* `batch_invert`: Montgomery's trick, one inversion per batch.

Fixed-base tables for encryption randomness live in `fixedbase`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import gmpy2
import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.executor import Executor, chunk_bounds, parts_for
from sharelearn.crypto.kernels import mbexp, mbx
from sharelearn.crypto.kernels.mbexp import Mpz, mbx_supported

__all__ = [
    "Mpz",
    "RandBytes",
    "batch_invert",
    "int_digits",
    "mbx_supported",
    "multi_exp",
    "powmod",
    "random_bytes",
    "random_prime",
    "security_bits",
]

RandBytes: TypeAlias = Callable[[int], bytes]

_LANES = mbexp.LANES
_MBX_MIN_EXP_BITS = 12  # below this gmpy2's few multiplications beat the kernel's set-up cost


# (base rows, exponent rows (one shared or one per base), exponent bits, modulus, use mbx)
_PowmodItem: TypeAlias = tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], int, int, bool]


def _powmod_words(item: _PowmodItem) -> npt.NDArray[np.uint64]:
    """Executor kernel: one chunk of `powmod`, numbers as little-endian uint64 rows (`_to_words`).

    Items and results are wire values, so any executor can ship them (a worker process receives
    the tuple as a list).
    """
    base_w, exp_w, exp_bits, mod, use_mbx = item
    bases = mbexp.from_words(base_w, base_w.shape[0])
    m = gmpy2.mpz(mod)
    if use_mbx:
        lib = mbx.load()
        if lib is None:
            raise CryptoError("the mbx kernel is not available in this worker")
        out = mbexp.exp_chunk(lib, bases, exp_w, int(exp_bits), m)
    else:  # one shared exponent: gmpy2's powmod_base_list releases the GIL
        out = list(gmpy2.powmod_base_list(bases, gmpy2.mpz(mbexp.from_words(exp_w, 1)[0]), m))
    return mbexp.to_words(out, base_w.shape[1])


def _chunk_size(count: int, workers: int) -> int:
    per = -(-count // max(1, 4 * workers))
    return max(_LANES, min(1024, -(-per // _LANES) * _LANES))


def _on_executor(
    executor: Executor,
    bases: Sequence[Mpz],
    ewords: npt.NDArray[np.uint64],
    exp_bits: int,
    mod: Mpz,
    use_mbx: bool,
) -> list[Mpz]:
    nwords = -(-int(mod.bit_length()) // 64)
    count, shared = len(bases), ewords.shape[0] == 1 and len(bases) > 1
    bounds = chunk_bounds(count, -(-count // _chunk_size(count, executor.parallelism)), multiple=_LANES)
    items: list[_PowmodItem] = [
        (mbexp.to_words(bases[a:b], nwords), ewords if shared else ewords[a:b], exp_bits, int(mod), use_mbx)
        for a, b in bounds
    ]
    parts = executor.map(_powmod_words, items, releases_gil=True)
    return [x for part in parts for x in mbexp.from_words(part, part.shape[0])]


def powmod(
    bases: Sequence[Mpz], exps: int | Sequence[int], mod: Mpz, *, executor: Executor | None = None
) -> list[Mpz]:
    """Return [b^e mod `mod`] for every base (reduced, < mod) and exponent (>= 0, one or one each).

    Uses mbx when available for this modulus size and at least 8 bases, else gmpy2. With an
    executor, batches of more than 8 bases run as chunks on it (both kernels release the GIL);
    `executor=None` computes in the calling thread.
    """
    count = len(bases)
    top = int(exps) if isinstance(exps, int) else max((int(e) for e in exps), default=0)
    low = int(exps) if isinstance(exps, int) else min((int(e) for e in exps), default=0)
    if low < 0:
        raise CryptoError("internal: powmod needs non-negative exponents")
    if count == 0:
        return []
    if top == 0:
        return [gmpy2.mpz(1)] * count
    exp_bits = top.bit_length()
    lib = mbx.load()
    mod_bits = int(mod.bit_length())
    use_mbx = lib is not None and count >= _LANES and _MBX_MIN_EXP_BITS <= exp_bits <= mod_bits
    use_mbx = use_mbx and mbx_supported(mod_bits) is not None
    if not use_mbx and not isinstance(exps, int):
        # Varied exponents: gmpy2 has no GIL-free call for these, so threads would not help.
        return [gmpy2.powmod(b, e, mod) for b, e in zip(bases, exps, strict=True)]
    exp_list = [exps] if isinstance(exps, int) else list(exps)
    ewords = mbexp.to_words([gmpy2.mpz(e) for e in exp_list], -(-exp_bits // 64))
    if executor is not None and parts_for(executor, count, _LANES) > 1:
        return _on_executor(executor, bases, ewords, exp_bits, mod, use_mbx)
    if use_mbx and lib is not None:
        return mbexp.exp_chunk(lib, bases, ewords, exp_bits, mod)
    return list(gmpy2.powmod_base_list(bases, gmpy2.mpz(exps), mod))


def batch_invert(values: Sequence[Mpz], mod: Mpz) -> list[Mpz]:
    """Invert every value mod `mod` with one inversion and 3(n-1) multiplications (Montgomery's trick)."""
    if not values:
        return []
    prefix = [values[0]]
    for v in values[1:]:
        prefix.append(prefix[-1] * v % mod)
    try:
        inv = gmpy2.invert(prefix[-1], mod)
    except ZeroDivisionError as exc:
        raise CryptoError(
            "a ciphertext is not invertible modulo the key's modulus (malformed input)"
        ) from exc
    out = [gmpy2.mpz(0)] * len(values)
    for i in range(len(values) - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % mod
        inv = inv * values[i] % mod
    out[0] = inv
    return out


def int_digits(exps: Sequence[int], window_bits: int) -> npt.NDArray[np.int64]:
    """Split non-negative integers into rows of little-endian `window_bits`-bit digits."""
    top = max((int(e).bit_length() for e in exps), default=0)
    windows = -(-top // window_bits)
    mask = (1 << window_bits) - 1
    if top <= 63:
        arr = np.asarray([int(e) for e in exps], dtype=np.uint64).reshape(-1, 1)
        shifts = (np.arange(windows, dtype=np.uint64) * np.uint64(window_bits)).reshape(1, -1)
        return ((arr >> shifts) & np.uint64(mask)).astype(np.int64)
    obj = np.empty(len(exps), dtype=object)
    obj[:] = [int(e) for e in exps]
    cols = [((obj >> (window_bits * j)) & mask).astype(np.int64) for j in range(windows)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(exps), 0), np.int64)


def _pippenger_window(bits: int, terms: int) -> int:
    def cost(w: int) -> float:
        return math.ceil(bits / w) * (terms + (2 << w))

    return min(range(1, 17), key=cost)


def multi_exp(bases: Sequence[Mpz], exps: npt.NDArray[Any], mod: Mpz) -> list[Mpz]:
    """Return [prod_i bases[i]^exps[k, i] mod `mod` for each row k] (Pippenger's bucket method).

    Args:
        bases: the shared bases, reduced mod `mod`.
        exps: non-negative integer exponents, shape (rows, len(bases)); int64/uint64 or object.
        mod: the modulus.
    """
    out: list[Mpz] = []
    one = gmpy2.mpz(1)
    for row in exps:
        nz = np.flatnonzero(row)
        if nz.size == 0:
            out.append(one)
            continue
        vals = [int(v) for v in row[nz].tolist()]
        bits = max(v.bit_length() for v in vals)
        w = _pippenger_window(bits, int(nz.size))
        digits = int_digits(vals, w)
        idx = nz.tolist()
        result = one
        for j in range(digits.shape[1] - 1, -1, -1):
            if result != one:
                result = gmpy2.powmod(result, 1 << w, mod)
            result = result * _bucket_sum(bases, idx, digits[:, j].tolist(), w, mod) % mod
        out.append(result)
    return out


def _bucket_sum(bases: Sequence[Mpz], idx: list[int], digits: list[int], w: int, mod: Mpz) -> Mpz:
    buckets: list[Mpz | None] = [None] * (1 << w)
    for i, d in zip(idx, digits, strict=True):
        if d:
            cur = buckets[d]
            buckets[d] = bases[i] if cur is None else cur * bases[i] % mod
    run: Mpz | None = None
    acc: Mpz | None = None
    for d in range((1 << w) - 1, 0, -1):  # prod_d bucket_d^d as a product of running products
        b = buckets[d]
        if b is not None:
            run = b if run is None else run * b % mod
        if run is not None:
            acc = run if acc is None else acc * run % mod
    return gmpy2.mpz(1) if acc is None else acc


def security_bits(modulus_bits: int) -> int:
    """Symmetric-equivalent strength of a factoring-based modulus (NIST SP 800-57 Part 1, Table 2)."""
    for limit, kappa in ((2048, 80), (3072, 112), (7680, 128), (15360, 192)):
        if modulus_bits < limit:
            return kappa
    return 256


def random_prime(bits: int, rng: RandBytes | None = None) -> Mpz:
    """Return a random prime of exactly `bits` bits whose top two bits are set.

    Setting both top bits makes a product of two such primes exactly 2 * bits long, so n, n^2 and
    p^2 land in the size classes the mbx kernels accept.
    """
    nbytes = (bits + 7) // 8
    while True:
        raw = random_bytes(nbytes, rng)
        cand = gmpy2.mpz(int.from_bytes(raw, "big") >> (nbytes * 8 - bits))
        cand |= (gmpy2.mpz(3) << (bits - 2)) | 1
        p = gmpy2.next_prime(cand)
        if p.bit_length() == bits and gmpy2.is_prime(p, 64):
            return p


def random_bytes(count: int, rng: RandBytes | None = None) -> bytes:
    """`count` bytes from `rng`, or from the OS CSPRNG when it is None."""
    raw = (rng or os.urandom)(count)
    if len(raw) != count:
        raise CryptoError(f"rng returned {len(raw)} bytes, expected {count}")
    return raw
