"""Fixed-base window tables: the encryption randomness h^r of Paillier (DJN) and OU, and OU's g^m.

A table holds base^(d * 2^(w*j)) for every window j and digit d, so an l-bit exponent of a fixed
base costs ceil(l / w) - 1 multiplications and no squarings.

Two engines compute the products, with identical results:

* on CPUs with AVX512-IFMA, `mbxmont` multiplies 8 numbers per call with ipp-crypto's Montgomery
  kernel (tables kept in Montgomery form; about 3x fewer cycles than gmpy2 at 2048 bits);
* elsewhere (or with `mbx.force_portable(True)`), gmpy2 multiplications.

Either way big batches are split between the calling thread and `procpool` worker processes, each
of which builds its own copy of the tables once per key. (Threads do not scale: gmpy2 holds the
GIL, and the kernel's calls are too short, ~5 us, for the GIL hand-off between threads to pay.)
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import Wire
from sharelearn.crypto import mbxmont, procpool
from sharelearn.crypto.modexp import Mpz, RandBytes, int_digits, random_bytes

__all__ = [
    "FixedBaseTable",
    "exponent_digits",
    "fixed_base_products",
    "random_exponents",
    "serve_worker",
]

log = logging.getLogger(__name__)
_PROC_MIN = 96  # elements per worker process below which IPC and start-up cost more than they save


def _chunks(count: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, count)) for i in range(0, count, size)]


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
) -> list[Mpz]:
    fast = _mbx_products(tables, digits, negative)
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


@functools.lru_cache(maxsize=16)
def _worker_table(base: int, mod: int, window_bits: int) -> FixedBaseTable:
    return FixedBaseTable(gmpy2.mpz(base), gmpy2.mpz(mod), window_bits)


def _handle_products(request: Wire) -> Wire:
    """Worker side of `fixed_base_products`: one chunk's products as fixed-width little-endian bytes."""
    req: Any = request  # shapes checked below; the parent built it
    if (
        not isinstance(req, dict)
        or not isinstance(req.get("mod"), int)
        or not isinstance(req.get("specs"), list)
    ):
        raise CryptoError("bad worker request")
    mod = req["mod"]
    tables = [_worker_table(int(base), mod, int(w)) for base, w in req["specs"]]
    affine, negative = req.get("affine"), req.get("negative")
    pair = None if affine is None else (gmpy2.mpz(affine[0]), [int(m) for m in affine[1]])
    width = (mod.bit_length() + 7) // 8
    return b"".join([v.to_bytes(width, "little") for v in _products(tables, req["digits"], pair, negative)])


def _int_wire(ms: Sequence[int]) -> Wire:
    vals = [int(m) for m in ms]
    if all(-(1 << 63) <= m < (1 << 63) for m in vals):
        return np.asarray(vals, dtype=np.int64)
    return list(vals)


def serve_worker() -> None:
    """Entry point of a `procpool` worker process."""
    procpool.serve(_handle_products)


_WORKER_ENTRY = "from sharelearn.crypto.fixedbase import serve_worker; serve_worker()"


def fixed_base_products(
    tables: Sequence[FixedBaseTable],
    digits: Sequence[npt.NDArray[np.int64]],
    *,
    affine: tuple[Mpz, Sequence[int]] | None = None,
    negative: npt.NDArray[np.bool_] | None = None,
    workers: int = 1,
) -> list[Mpz]:
    """Return (1 + k m_i) * prod_t tables[t].base^(digits[t][i] as w-bit digits) mod the tables' modulus.

    `affine` = (k, [m_i]) is Paillier's g^m = 1 + m n (k = n); None means a factor of 1. With
    `negative`, tables[0] and tables[1] are a table of g and of g^-1 that share digits[0] (OU's g^m
    for signed m: row i uses g^-1 where negative[i]); digits[1:] then belong to tables[2:].

    gmpy2 multiplications hold the GIL (threads measured slower than one), so batches of at least
    `_PROC_MIN` per worker are split between the calling thread and `workers - 1` worker processes
    (`procpool`), each of which builds its own copy of the tables once per key.
    """
    count = digits[0].shape[0]
    helpers = min(workers - 1, count // _PROC_MIN - 1)
    if helpers <= 0:
        return _products(tables, digits, affine, negative)
    mod = int(tables[0].mod)
    specs: list[Wire] = [[int(t.base), t.window_bits] for t in tables]
    try:
        pool = procpool.acquire(helpers, _WORKER_ENTRY)
    except OSError as exc:  # no subprocesses here (sandbox, fd limits): stay in-process
        log.warning("cannot start HE worker processes (%s); computing in-process", exc)
        pool = []
    if not pool:
        return _products(tables, digits, affine, negative)
    parts = _chunks(count, -(-count // (len(pool) + 1)))
    try:
        for w, (a, b) in zip(pool, parts[1:], strict=True):
            chunk: Wire = None if affine is None else [int(affine[0]), _int_wire(affine[1][a:b])]
            neg: Wire = None if negative is None else negative[a:b]
            w.send(
                {
                    "mod": mod,
                    "specs": specs,
                    "digits": [d[a:b].astype(np.uint16) for d in digits],  # w <= 16: 1/4 of the bytes
                    "affine": chunk,
                    "negative": neg,
                }
            )
        a0, b0 = parts[0]
        out = _products(
            tables,
            [d[a0:b0] for d in digits],
            None if affine is None else (affine[0], affine[1][a0:b0]),
            None if negative is None else negative[a0:b0],
        )
        width = (mod.bit_length() + 7) // 8
        frm = gmpy2.mpz.from_bytes
        for w in pool:
            raw = w.recv()
            if not isinstance(raw, bytes) or len(raw) % width:
                raise CryptoError("worker returned a malformed reply")
            out.extend([frm(raw[i : i + width], "little") for i in range(0, len(raw), width)])
    except (CryptoError, OSError) as exc:
        # A dead or failing worker costs time, never correctness: redo the batch here.
        log.warning("HE worker process failed (%s); computing %d values in-process", exc, count)
        procpool.release(pool, broken=True)
        return _products(tables, digits, affine, negative)
    procpool.release(pool)
    return out


def exponent_digits(exps: npt.NDArray[np.uint8], bits: int, window_bits: int) -> npt.NDArray[np.int64]:
    """Digits (count, ceil(bits / w)) of exponents drawn by `random_exponents`."""
    return _bytes_to_digits(exps, window_bits, -(-bits // window_bits))
