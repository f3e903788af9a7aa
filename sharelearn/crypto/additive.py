"""Additive secret sharing over Z_2^64 (SecureML, Mohassel & Zhang 2017, §2.2; ABY §III-A).

x = x_0 + x_1 + ... + x_{n-1} mod 2^64. numpy uint64 arithmetic wraps mod 2^64, so every local
operation is one vectorised numpy expression. The n - 1 first shares are uniform and independent
of x, so any n - 1 shares leak nothing; all n reveal x.

Local operations (no communication): `add`, `sub`, `neg`, `add_public` (only party 0 adds the
constant), `scale` (by a public ring element), and SecureML's local truncation `truncate_share`.
Multiplication of two shared values needs a Beaver triple (`beaver.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U64Array
from sharelearn.crypto.rng import Rng, random_u64

__all__ = [
    "add",
    "add_public",
    "neg",
    "reconstruct",
    "scale",
    "share",
    "sub",
    "truncate_share",
    "truncation_failure_bound",
]


def _ring(x: npt.ArrayLike, what: str) -> U64Array:
    arr = np.asarray(x)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == np.int64:
        return arr.view(np.uint64)
    raise CryptoError(f"{what} must be a uint64 (or int64) ring array, got dtype {arr.dtype}")


def share(x: npt.ArrayLike, n: int = 2, rng: Rng | None = None) -> list[U64Array]:
    """Split ring elements into `n` additive shares.

    Args:
        x: uint64 (or int64) array of ring elements.
        n: number of parties, at least 2.
        rng: randomness source (default: the OS CSPRNG).

    Returns:
        `n` arrays of x's shape; share i goes to party i.

    Raises:
        CryptoError: if n < 2 or x is not a ring array.
    """
    secret = _ring(x, "secret")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise CryptoError(f"additive sharing needs n >= 2 parties, got {n!r}")
    masks = random_u64((n - 1, *secret.shape), rng)
    last = secret - masks.sum(axis=0, dtype=np.uint64)
    return [*list(masks), last]


def reconstruct(shares: Sequence[npt.ArrayLike]) -> U64Array:
    """Add all shares mod 2^64.

    Raises:
        CryptoError: on no shares, a non-ring dtype or mismatched shapes.
    """
    if len(shares) == 0:
        raise CryptoError("cannot reconstruct from zero shares")
    arrays = [_ring(s, f"share {i}") for i, s in enumerate(shares)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise CryptoError(f"shares have different shapes: {sorted(shapes)}")
    total = arrays[0].copy()
    for a in arrays[1:]:  # one pass per party, not per element
        total += a
    return total


def add(x_sh: npt.ArrayLike, y_sh: npt.ArrayLike) -> U64Array:
    """Return a share of x + y from shares of x and y."""
    out: U64Array = _ring(x_sh, "x share") + _ring(y_sh, "y share")
    return out


def sub(x_sh: npt.ArrayLike, y_sh: npt.ArrayLike) -> U64Array:
    """Return a share of x - y from shares of x and y."""
    out: U64Array = _ring(x_sh, "x share") - _ring(y_sh, "y share")
    return out


def neg(x_sh: npt.ArrayLike) -> U64Array:
    """Return a share of -x."""
    out: U64Array = np.uint64(0) - _ring(x_sh, "x share")
    return out


def add_public(party_index: int, x_sh: npt.ArrayLike, c: npt.ArrayLike) -> U64Array:
    """Return a share of x + c for a public ring constant c; only party 0 adds it."""
    x = _ring(x_sh, "x share")
    if party_index == 0:
        out: U64Array = x + _ring(c, "public constant")
        return out
    return np.broadcast_to(x, np.broadcast_shapes(x.shape, np.shape(c))).copy()


def scale(x_sh: npt.ArrayLike, c: npt.ArrayLike) -> U64Array:
    """Return a share of c * x for a public ring element c (every party multiplies).

    A fixed-point c multiplies the fractional bits: truncate the result afterwards.
    """
    out: U64Array = _ring(x_sh, "x share") * _ring(c, "public scalar")
    return out


def truncate_share(party_index: int, x_sh: npt.ArrayLike, frac_bits: int) -> U64Array:
    """Truncate a 2-party share by 2^frac_bits locally (SecureML, Theorem 1).

    Party 0 returns x_0 >> f, party 1 returns -((-x_1) >> f), shifts with arithmetic (signed)
    semantics. If |x| < 2^l_x then, except with probability at most 2^(l_x + 1 - 64) per element
    (`truncation_failure_bound`), the shares reconstruct to floor(x / 2^f) or floor(x / 2^f) + 1:
    an error of at most one unit in the last place. On failure the result is off by about
    2^(64-f), so callers keep l_x well below 64 (fixed point with f = 16 and |x| < 2^31 real
    units gives l_x = 47 and failure probability 2^-16 per element at worst; typical values
    are far smaller).

    Two parties only: for n > 2 the shares' sum can wrap several times.

    Leaks: nothing; no message is sent.
    """
    if not 1 <= frac_bits < 64:
        raise CryptoError(f"truncation needs 1 <= frac_bits < 64, got {frac_bits}")
    signed = _ring(x_sh, "share").view(np.int64)
    f = np.int64(frac_bits)
    if party_index == 0:
        return (signed >> f).view(np.uint64)
    if party_index == 1:
        negated = (np.uint64(0) - signed.view(np.uint64)).view(np.int64)
        return np.uint64(0) - (negated >> f).view(np.uint64)
    raise CryptoError(f"SecureML truncation is 2-party: party_index must be 0 or 1, got {party_index}")


def truncation_failure_bound(value_bits: int) -> float:
    """Upper bound 2^(l_x + 1 - 64) on `truncate_share`'s per-element failure probability."""
    if not 0 <= value_bits < 64:
        raise CryptoError(f"value_bits must be in 0..63, got {value_bits}")
    return float(2.0 ** (value_bits + 1 - 64))
