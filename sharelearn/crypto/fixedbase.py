"""Fixed-base window tables: the encryption randomness h^r of Paillier (DJN) and OU, and OU's g^m.

A table holds base^(d * 2^(w*j)) for every window j and digit d, so an l-bit exponent of a fixed
base costs ceil(l / w) - 1 multiplications and no squarings.

Two engines compute the products, with identical results:

* on CPUs with AVX512-IFMA, `mbxmont` multiplies 8 numbers per call with ipp-crypto's Montgomery
  kernel (tables kept in Montgomery form; about 3x fewer cycles than gmpy2 at 2048 bits);
* elsewhere (or with `mbx.force_portable(True)`), gmpy2 multiplications.

Either way a big batch is split into one chunk per unit of the executor's parallelism and handed
to it as GIL-bound work (`releases_gil=False`): threads do not scale here (gmpy2 holds the GIL,
and the kernel's calls are too short, ~5 us, for the GIL hand-off between threads to pay), so a
local executor runs the chunks in worker processes, each of which builds its own copy of the
tables once per key (`table`, a per-process cache).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.executor import Executor, chunk_bounds, parts_for
from sharelearn.core.types import Wire
from sharelearn.crypto.kernels import mbx, mbxmont
from sharelearn.crypto.modexp import Mpz, RandBytes, int_digits, random_bytes

__all__ = [
    "FixedBaseTable",
    "exponent_digits",
    "fixed_base_products",
    "random_exponents",
    "table",
]

_PROC_MIN = 96  # elements per worker process below which IPC and start-up cost more than they save


class FixedBaseTable:
    """Powers base^(d * 2^(w*j)) of one fixed base, built lazily window by window.

    An exponent with `windows` w-bit digits then costs `windows - 1` multiplications.
    """

    def __init__(self, base: Mpz, mod: Mpz, window_bits: int) -> None:
        if not 1 <= window_bits <= 16:
            raise CryptoError(f"window_bits must be in 1..16, got {window_bits}")
        self.base = gmpy2.mpz(base)
        self.mod = gmpy2.mpz(mod)
        self.window_bits = window_bits
        self._rows: list[list[Mpz]] = []
        self._next = self.base % self.mod  # base^(2^(w*len(rows)))
        self._lock = threading.Lock()
        self._mont: mbxmont.MontTable | None = None

    def mont_rows(self, windows: int) -> npt.NDArray[np.uint64] | None:
        """The first `windows` rows in Montgomery form for the IFMA kernel, or None without one."""
        found = mbxmont.kernel(int(self.mod.bit_length()))
        if found is None:
            return None
        if self._mont is None:
            self._mont = mbxmont.MontTable(self.mod, *found)
        return self._mont.ensure(self.rows(windows))[:windows]

    def mont_context(self) -> Any:
        """The kernel's view of the modulus (after `mont_rows` returned rows)."""
        if self._mont is None:
            raise CryptoError("no Montgomery table was built for this fixed base")
        return self._mont.ctx

    def rows(self, windows: int) -> list[list[Mpz]]:
        """Return the first `windows` rows, building any that are missing."""
        with self._lock:
            mod, one = self.mod, gmpy2.mpz(1)
            while len(self._rows) < windows:
                start = self._next
                row = [one, start]
                for _ in range(2, 1 << self.window_bits):
                    row.append(row[-1] * start % mod)
                self._rows.append(row)
                self._next = row[-1] * start % mod
            return self._rows[:windows]

    def pow_digits(
        self,
        digits: npt.NDArray[np.int64],
        init: Sequence[Mpz] | None = None,
        *,
        negative: npt.NDArray[np.bool_] | None = None,
        inverse: FixedBaseTable | None = None,
    ) -> list[Mpz]:
        """Return init[i] * base^(+-sum_j digits[i, j] * 2^(w*j)) mod `mod` for every row i.

        Rows flagged in `negative` use `inverse`, a table of base^-1 with the same window size.
        """
        count, windows = digits.shape
        if windows == 0:
            return [gmpy2.mpz(1)] * count if init is None else list(init)
        rows, mod = self.rows(windows), self.mod
        signed = negative is not None and inverse is not None and bool(negative.any())
        inv_rows = inverse.rows(windows) if signed and inverse is not None else rows
        neg = negative.tolist() if signed and negative is not None else [False] * count
        first, start = 0, init
        if init is None:  # the first window is a lookup, not a multiplication
            pair = (rows[0], inv_rows[0])
            start = [pair[s][d] for s, d in zip(neg, digits[:, 0].tolist(), strict=True)]
            first = 1
        acc: list[Mpz] = list(start) if start is not None else []
        for j in range(first, windows):
            if signed:
                pair = (rows[j], inv_rows[j])
                acc = [a * pair[s][d] % mod for a, s, d in zip(acc, neg, digits[:, j].tolist(), strict=True)]
            else:
                row = rows[j]
                acc = [a * row[d] % mod for a, d in zip(acc, digits[:, j].tolist(), strict=True)]
        return acc

    def pow(self, exps: Sequence[int]) -> list[Mpz]:
        """Return base^e mod `mod` for every non-negative exponent e."""
        return self.pow_digits(int_digits(exps, self.window_bits))


def random_exponents(count: int, bits: int, window_bits: int, rng: RandBytes | None) -> npt.NDArray[np.uint8]:
    """Draw `count` uniform exponents of ceil(bits / w) * w bits as little-endian bytes, shape (count, B)."""
    windows = -(-bits // window_bits)
    nbytes = -(-windows * window_bits // 64) * 8  # whole 64-bit words, as the mbx kernels read them
    raw = random_bytes(count * nbytes, rng)
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(count, nbytes).copy()
    extra = nbytes * 8 - windows * window_bits  # clear bits above the last window
    if extra:
        bits_arr = np.unpackbits(arr, axis=1, bitorder="little")
        bits_arr[:, windows * window_bits :] = 0
        arr = np.packbits(bits_arr, axis=1, bitorder="little")
    return arr


def _bytes_to_digits(exps: npt.NDArray[np.uint8], window_bits: int, windows: int) -> npt.NDArray[np.int64]:
    bits_arr = np.unpackbits(exps, axis=1, bitorder="little")[:, : windows * window_bits]
    weights = np.left_shift(1, np.arange(window_bits, dtype=np.int64))
    return bits_arr.reshape(exps.shape[0], windows, window_bits).astype(np.int64) @ weights


def _mbx_products(
    tables: Sequence[FixedBaseTable],
    digits: Sequence[npt.NDArray[np.int64]],
    negative: npt.NDArray[np.bool_] | None,
) -> list[Mpz] | None:
    """The IFMA path of `_products` (without the affine factor); None where no kernel applies."""
    count, lead = digits[0].shape[0], tables[0]
    factors: list[mbxmont.Factor] = []
    if negative is not None:  # tables[0] / tables[1]: g and g^-1 sharing digits[0]
        d = digits[0]
        pos, neg = tables[0].mont_rows(d.shape[1]), tables[1].mont_rows(d.shape[1])
        if pos is None or neg is None:
            return None
        factors.append(mbxmont.Factor(pos, d, neg, negative))
        tables, digits = tables[2:], digits[1:]
    for table, d in zip(tables, digits, strict=True):
        rows = table.mont_rows(d.shape[1])
        if rows is None:
            return None
        factors.append(mbxmont.Factor(rows, d))
    return mbxmont.products(lead.mont_context(), factors, count)


def _products(
    tables: Sequence[FixedBaseTable],
    digits: Sequence[npt.NDArray[np.int64]],
    affine: Any,
    negative: npt.NDArray[np.bool_] | None = None,
    *,
    use_mbx: bool = True,
) -> list[Mpz]:
    fast = _mbx_products(tables, digits, negative) if use_mbx else None
    if fast is not None:
        if affine is None:
            return fast
        k, ms = affine
        mod = tables[0].mod
        return [(k * m + 1) * x % mod for m, x in zip(ms, fast, strict=True)]
    acc = None
    if affine is not None:
        k, ms = affine
        mod = tables[0].mod
        acc = [(k * m + 1) % mod for m in ms]
    if negative is not None:  # tables[0] / tables[1] are base / base^-1 sharing digits[0]
        if digits[0].shape[1]:
            acc = tables[0].pow_digits(digits[0], acc, negative=negative, inverse=tables[1])
        tables = tables[2:]
        digits = digits[1:]
    for table, d in zip(tables, digits, strict=True):
        if d.shape[1]:
            acc = table.pow_digits(d, acc)
    return [gmpy2.mpz(1)] * digits[0].shape[0] if acc is None else list(acc)


@functools.lru_cache(maxsize=64)
def table(base: Mpz | int, mod: Mpz | int, window_bits: int) -> FixedBaseTable:
    """This process's table of `base` mod `mod`, shared by every key and executor chunk.

    mpz and int keys of the same value hit the same entry (gmpy2 hashes them alike).
    """
    return FixedBaseTable(gmpy2.mpz(base), gmpy2.mpz(mod), window_bits)


def _products_chunk(request: dict[str, Any]) -> bytes:
    """Executor kernel: one chunk of `fixed_base_products`, as fixed-width little-endian bytes.

    The request names the tables by (base, window) and the modulus, so a worker process finds or
    builds its own copy (`table`); the calling process finds the very tables its keys use.
    """
    mod = request["mod"]
    if not isinstance(mod, int) or not isinstance(request.get("specs"), list):
        raise CryptoError("bad fixed-base request")
    tables = [table(int(base), mod, int(w)) for base, w in request["specs"]]
    affine, negative = request.get("affine"), request.get("negative")
    pair = None if affine is None else (gmpy2.mpz(affine[0]), [int(m) for m in affine[1]])
    digits = [np.asarray(d, dtype=np.int64) for d in request["digits"]]
    neg = None if negative is None else np.asarray(negative, dtype=np.bool_)
    width = (mod.bit_length() + 7) // 8
    products = _products(tables, digits, pair, neg, use_mbx=bool(request.get("mbx", True)))
    return b"".join([v.to_bytes(width, "little") for v in products])


def _int_wire(ms: Sequence[int]) -> Wire:
    vals = [int(m) for m in ms]
    if all(-(1 << 63) <= m < (1 << 63) for m in vals):
        return np.asarray(vals, dtype=np.int64)
    return list(vals)


def _request(
    tables: Sequence[FixedBaseTable],
    digits: Sequence[npt.NDArray[np.int64]],
    affine: tuple[Mpz, Sequence[int]] | None,
    negative: npt.NDArray[np.bool_] | None,
    rows: tuple[int, int],
) -> dict[str, Any]:
    a, b = rows
    return {
        "mod": int(tables[0].mod),
        "specs": [[int(t.base), t.window_bits] for t in tables],
        "digits": [d[a:b].astype(np.uint16) for d in digits],  # w <= 16: 1/4 of the bytes
        "affine": None if affine is None else [int(affine[0]), _int_wire(affine[1][a:b])],
        "negative": None if negative is None else negative[a:b],
        "mbx": mbx.is_available(),  # the caller's choice (tests force the portable path) holds everywhere
    }


def fixed_base_products(
    tables: Sequence[FixedBaseTable],
    digits: Sequence[npt.NDArray[np.int64]],
    *,
    affine: tuple[Mpz, Sequence[int]] | None = None,
    negative: npt.NDArray[np.bool_] | None = None,
    executor: Executor | None = None,
) -> list[Mpz]:
    """Return (1 + k m_i) * prod_t tables[t].base^(digits[t][i] as w-bit digits) mod the tables' modulus.

    `affine` = (k, [m_i]) is Paillier's g^m = 1 + m n (k = n); None means a factor of 1. With
    `negative`, tables[0] and tables[1] are a table of g and of g^-1 that share digits[0] (OU's g^m
    for signed m: row i uses g^-1 where negative[i]); digits[1:] then belong to tables[2:].

    With an executor, batches of at least `_PROC_MIN` rows per chunk run as GIL-bound chunks on it
    (see the module docstring); `executor=None` computes in the calling thread.
    """
    count = digits[0].shape[0]
    parts = parts_for(executor, count, _PROC_MIN)
    if parts <= 1 or executor is None:
        return _products(tables, digits, affine, negative)
    requests = [_request(tables, digits, affine, negative, r) for r in chunk_bounds(count, parts)]
    width = (int(tables[0].mod.bit_length()) + 7) // 8
    frm = gmpy2.mpz.from_bytes
    out: list[Mpz] = []
    for raw in executor.map(_products_chunk, requests, releases_gil=False):
        if not isinstance(raw, bytes) or len(raw) % width:
            raise CryptoError("a fixed-base chunk came back malformed")
        out.extend([frm(raw[i : i + width], "little") for i in range(0, len(raw), width)])
    if len(out) != count:
        raise CryptoError(f"fixed-base chunks returned {len(out)} values for {count} rows")
    return out


def exponent_digits(exps: npt.NDArray[np.uint8], bits: int, window_bits: int) -> npt.NDArray[np.int64]:
    """Digits (count, ceil(bits / w)) of exponents drawn by `random_exponents`."""
    return _bytes_to_digits(exps, window_bits, -(-bits // window_bits))
