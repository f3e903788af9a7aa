"""Fixed-base window products on Intel's multi-buffer Montgomery kernels (AVX512-IFMA, 8 lanes).

`libcrypto_mb` (the `ipp-crypto` wheel) exports `ifma_amm52x{L}_mb8`: eight almost-Montgomery
multiplications a * b * 2^(-52 L) mod M per call, numbers as L digits of 52 bits, stored digit-major
with the eight lanes innermost (`[L][8]` uint64). This module runs the fixed-base window products of
`fixedbase` (the encryption randomness h^r of Paillier and OU, and OU's g^m) on that kernel:

* every table entry is kept in Montgomery form (x R mod M, R = 2^(52 L)) as a numpy array
  (windows, 2^w, L), built once per table from the gmpy2 rows;
* a batch is cut into groups of 8; for each window the selected entries are gathered with one
  numpy `take` into a (groups, L, 8) buffer and multiplied into the accumulators group by group;
* the product leaves the Montgomery domain with one multiplication by 1 and a final `% M`.

"Almost" Montgomery: outputs are < 2M for inputs < 2M when R > 4M, which the digit count L
guarantees (52 L >= |M| + 2); the final reduction makes them canonical.

These are internal kernel symbols, not the library's public API, so `kernel()` runs a known-answer
self-test against gmpy2 on first use and returns None (portable gmpy2 path) if it fails; a
modulus of more than 79 * 52 - 2 bits has no kernel and also takes the gmpy2 path. The ctypes
calls release the GIL but last only ~5 us each, too short for threads to gain from the GIL
hand-off (measured: x1.0 with two threads), so `fixedbase` spreads big batches over processes.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np
import numpy.typing as npt

from sharelearn.crypto.kernels import mbx
from sharelearn.crypto.kernels.mbexp import Mpz

__all__ = ["Factor", "MontTable", "digit_count", "from_digits", "kernel", "products", "to_digits"]

LANES = 8
DIGIT_BITS = 52
_MASK = np.uint64((1 << DIGIT_BITS) - 1)
_SIZES = (10, 20, 30, 40, 60, 79)  # the kernels the library exports
Kernel = Callable[[int, int, int, int, int], None]
U64 = npt.NDArray[np.uint64]


def digit_count(mod_bits: int) -> int | None:
    """Smallest kernel size L with 2^(52 L) > 4 M, or None when the modulus is too large."""
    return next((n for n in _SIZES if DIGIT_BITS * n >= mod_bits + 2), None)


def to_digits(values: Sequence[Mpz], ndigits: int) -> U64:
    """Return (len(values), ndigits) 52-bit digits, least significant first; values < 2^(52 ndigits)."""
    nwords = (ndigits * DIGIT_BITS + 63) // 64 + 1
    raw = b"".join([gmpy2.mpz(v).to_bytes(nwords * 8, "little") for v in values])
    words = np.frombuffer(raw, dtype=np.uint64).reshape(len(values), nwords)
    out = np.empty((len(values), ndigits), dtype=np.uint64)
    for i in range(ndigits):
        k, s = divmod(DIGIT_BITS * i, 64)
        d = words[:, k] >> np.uint64(s)
        if s + DIGIT_BITS > 64:
            d |= words[:, k + 1] << np.uint64(64 - s)
        out[:, i] = d & _MASK
    return out


def from_digits(digits: U64) -> list[Mpz]:
    """Inverse of `to_digits` (each digit < 2^52)."""
    count, ndigits = digits.shape
    nwords = (ndigits * DIGIT_BITS + 63) // 64 + 1
    words = np.zeros((count, nwords), dtype=np.uint64)
    for i in range(ndigits):
        k, s = divmod(DIGIT_BITS * i, 64)
        col = np.ascontiguousarray(digits[:, i])
        words[:, k] |= col << np.uint64(s)
        if s + DIGIT_BITS > 64:
            words[:, k + 1] |= col >> np.uint64(64 - s)
    raw, width = words.tobytes(), nwords * 8
    frm = gmpy2.mpz.from_bytes
    return [frm(raw[i : i + width], "little") for i in range(0, len(raw), width)]


def _self_test(fn: Kernel, ndigits: int) -> bool:
    bits = DIGIT_BITS * ndigits - 2
    mod = (gmpy2.mpz(3) << (bits - 2)) + 0x9E3779B97F4A7C15  # any odd modulus will do
    xs = [gmpy2.mpz(pow(3, 1000 + i, int(mod))) for i in range(LANES)]
    ys = [gmpy2.mpz(pow(5, 2000 + i, int(mod))) for i in range(LANES)]
    ctx = _Modulus(mod, fn, ndigits)
    a, b = ctx.lanes(to_digits(xs, ndigits)), ctx.lanes(to_digits(ys, ndigits))
    out = np.empty_like(a)
    fn(out.ctypes.data, a.ctypes.data, b.ctypes.data, ctx.mod_mb.ctypes.data, ctx.k0.ctypes.data)
    r_inv = gmpy2.invert(gmpy2.mpz(1) << (DIGIT_BITS * ndigits), mod)
    got = from_digits(out.transpose(0, 2, 1).reshape(LANES, ndigits))
    return all(g % mod == x * y * r_inv % mod for g, x, y in zip(got, xs, ys, strict=True))


@functools.lru_cache(maxsize=8)
def _kernel_cached(ndigits: int) -> Kernel | None:
    lib = mbx.load()
    fn = getattr(lib, f"ifma_amm52x{ndigits}_mb8", None) if lib is not None else None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_void_p] * 5
    fn.restype = None
    kern: Kernel = fn
    return kern if _self_test(kern, ndigits) else None


def kernel(mod_bits: int) -> tuple[Kernel, int] | None:
    """The Montgomery kernel for a modulus of `mod_bits` bits and its digit count, or None."""
    ndigits = digit_count(mod_bits)
    if ndigits is None or not mbx.is_available():
        return None
    fn = _kernel_cached(ndigits)
    return None if fn is None else (fn, ndigits)


class _Modulus:
    """A modulus in the kernel's layout: M per lane, k0 = -M^-1 mod 2^52, R = 2^(52 L)."""

    def __init__(self, mod: Mpz, fn: Kernel, ndigits: int) -> None:
        self.mod, self.fn, self.ndigits = gmpy2.mpz(mod), fn, ndigits
        self.r = gmpy2.mpz(1) << (DIGIT_BITS * ndigits)
        m = to_digits([self.mod], ndigits)[0]
        self.mod_mb: U64 = np.ascontiguousarray(np.repeat(m[:, None], LANES, axis=1))
        k0 = int(-gmpy2.invert(self.mod, 1 << DIGIT_BITS) % (1 << DIGIT_BITS))
        self.k0: U64 = np.full(LANES, k0, dtype=np.uint64)
        self.one: U64 = np.zeros((ndigits, LANES), dtype=np.uint64)
        self.one[0] = 1

    def lanes(self, rows: U64) -> U64:
        """(8 g, L) digits -> (g, L, 8) kernel layout."""
        return np.ascontiguousarray(rows.reshape(-1, LANES, self.ndigits).transpose(0, 2, 1))

    def multiply(self, acc: U64, other: U64, lo: int, hi: int) -> None:
        """acc[g] = acc[g] * other[g] / R for groups lo..hi (in place)."""
        fn, step = self.fn, self.ndigits * LANES * 8
        pa, po = acc.ctypes.data, other.ctypes.data
        pm, pk = self.mod_mb.ctypes.data, self.k0.ctypes.data
        for g in range(lo, hi):
            fn(pa + g * step, pa + g * step, po + g * step, pm, pk)

    def leave(self, acc: U64, lo: int, hi: int) -> None:
        """acc[g] = acc[g] / R (out of the Montgomery domain), groups lo..hi."""
        fn, step = self.fn, self.ndigits * LANES * 8
        pa, p1 = acc.ctypes.data, self.one.ctypes.data
        pm, pk = self.mod_mb.ctypes.data, self.k0.ctypes.data
        for g in range(lo, hi):
            fn(pa + g * step, pa + g * step, p1, pm, pk)


class MontTable:
    """The rows of a fixed-base table in Montgomery form: array (windows, 2^w, L), grown lazily."""

    def __init__(self, mod: Mpz, fn: Kernel, ndigits: int) -> None:
        self.ctx = _Modulus(mod, fn, ndigits)
        self.rows: U64 = np.empty((0, 0, ndigits), dtype=np.uint64)
        self._lock = threading.Lock()

    def ensure(self, gmp_rows: Sequence[Sequence[Mpz]]) -> U64:
        """Convert any rows of `gmp_rows` not yet held and return the (windows, 2^w, L) array."""
        with self._lock:
            have = self.rows.shape[0]
            if have < len(gmp_rows):
                r, mod, n = self.ctx.r, self.ctx.mod, self.ctx.ndigits
                new = [to_digits([v * r % mod for v in row], n) for row in gmp_rows[have:]]
                stacked = np.stack(new)
                self.rows = stacked if have == 0 else np.concatenate([self.rows, stacked])
            return self.rows


@dataclass(frozen=True)
class Factor:
    """One fixed base of a product: Montgomery rows (windows, 2^w, L) and per-row digits (count, windows).

    With `inverse` (rows of base^-1) and `negative`, flagged rows use base^-(digits) instead.
    """

    rows: U64
    digits: npt.NDArray[np.int64]
    inverse: U64 | None = None
    negative: npt.NDArray[np.bool_] | None = None


def products(ctx: _Modulus, factors: Sequence[Factor], count: int) -> list[Mpz]:
    """Return prod_f prod_j f.rows[j][f.digits[i, j]] mod M (canonical) for every row i."""
    groups = -(-count // LANES)
    padded, n = groups * LANES, ctx.ndigits
    gather = np.empty((padded, n), dtype=np.uint64)
    if padded != count:  # padding rows multiply by R mod M, i.e. by 1
        gather[count:] = to_digits([ctx.r % ctx.mod], n)[0]
    acc: U64 | None = None
    other = np.empty((groups, n, LANES), dtype=np.uint64)
    for f in factors:
        digits = f.digits
        flip, inverse = None, f.inverse
        if inverse is not None and f.negative is not None:
            flip = np.flatnonzero(f.negative)
        for j in range(digits.shape[1]):
            np.take(f.rows[j], digits[:, j], axis=0, out=gather[:count])
            if flip is not None and inverse is not None and flip.size:
                gather[flip] = inverse[j][digits[flip, j]]
            target = other if acc is not None else np.empty_like(other)
            np.copyto(target, gather.reshape(groups, LANES, n).transpose(0, 2, 1))
            if acc is None:
                acc = target
            else:
                ctx.multiply(acc, other, 0, groups)
    if acc is None:
        return [gmpy2.mpz(1)] * count
    ctx.leave(acc, 0, groups)
    mod = ctx.mod
    return [v % mod for v in from_digits(acc.transpose(0, 2, 1).reshape(padded, n)[:count])]
