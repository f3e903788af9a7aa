"""Fixed-point encoding of reals into the ring Z_2^64 (SecureML, Mohassel & Zhang 2017, §4.1).

A real x is encoded as round(x * 2^f) in two's complement mod 2^64, with f = `frac_bits`. The
encoding is exact up to `resolution / 2` = 2^-(f+1) for |x| < 2^(63-f); anything larger, or a
NaN / inf, raises `CryptoError` rather than wrapping silently. Decoding reads the ring element
as a signed 64-bit integer and divides by 2^f.

The product of two encodings carries 2f fractional bits; `truncate` shifts them back (plain
values; the secret-shared version is `additive.truncate_share`). Encoding is public
arithmetic: it hides nothing by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.types import F64Array, U64Array

__all__ = ["DEFAULT_FRAC_BITS", "FixedPoint"]

# 16 fractional bits: resolution 1.5e-5, and 2^47 of integer headroom, so after a product
# (32 fractional bits) values up to 2^31 still fit, and SecureML truncation fails with
# probability ~2^(l_x + 1 - 64) per element for |x| < 2^l_x.
DEFAULT_FRAC_BITS = 16


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """Encode float64 arrays as uint64 ring elements with `frac_bits` fractional bits.

    Attributes:
        frac_bits: number of fractional bits f, 1..31 (a product has 2f <= 62 fractional bits and
            must still fit in the ring).
    """

    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        if isinstance(self.frac_bits, bool) or not isinstance(self.frac_bits, int):
            raise ConfigError(f"fixed_point.frac_bits must be an int, got {type(self.frac_bits).__name__}")
        if not 1 <= self.frac_bits <= 31:
            raise ConfigError(f"fixed_point.frac_bits must be in 1..31, got {self.frac_bits}")

    @property
    def scale(self) -> float:
        """2^f, the factor between a real and its encoding."""
        return float(2**self.frac_bits)

    @property
    def resolution(self) -> float:
        """2^-f, the gap between neighbouring representable values."""
        return 2.0**-self.frac_bits

    @property
    def max_abs(self) -> float:
        """2^(63-f): encodable values satisfy |x| < max_abs."""
        return float(2 ** (63 - self.frac_bits))

    def encode(self, x: npt.ArrayLike) -> U64Array:
        """Encode reals as ring elements round(x * 2^f) mod 2^64.

        Error bound: |decode(encode(x)) - x| <= resolution / 2.

        Raises:
            CryptoError: if any value is NaN, infinite, or |x| >= 2^(63-f).
        """
        arr = np.asarray(x, dtype=np.float64)
        scaled = np.rint(arr * self.scale)
        # np.abs(nan) >= limit is False, so check finiteness explicitly first.
        bad = ~np.isfinite(scaled) | (np.abs(scaled) >= 2.0**63)
        if bad.any():
            idx = np.flatnonzero(bad.reshape(-1))
            first = float(arr.reshape(-1)[idx[0]])
            raise CryptoError(
                f"fixed-point overflow: {idx.size} value(s) are not finite or have"
                f" |x| >= 2^{63 - self.frac_bits}"
                f" (first at flat index {int(idx[0])}: {first!r})"
            )
        return scaled.astype(np.int64).view(np.uint64)

    def decode(self, u: npt.ArrayLike, *, bound: float | None = None) -> F64Array:
        """Decode ring elements (two's complement) back to float64.

        Args:
            u: uint64 ring elements.
            bound: if given, raise when a decoded |value| exceeds it; protocols pass the range they
                expect so that a wrapped (overflowed) result is loud instead of garbage.

        Raises:
            CryptoError: if `u` is not uint64-compatible or a value exceeds `bound`.
        """
        ring = _as_u64(u)
        out = ring.view(np.int64).astype(np.float64) * self.resolution
        if bound is not None:
            over = np.abs(out) > bound
            if over.any():
                idx = np.flatnonzero(over.reshape(-1))
                raise CryptoError(
                    f"fixed-point decode: {idx.size} value(s) exceed the expected bound {bound}"
                    f" (first at flat index {int(idx[0])}); the computation probably overflowed"
                )
        return out

    def truncate(self, u: npt.ArrayLike, bits: int | None = None) -> U64Array:
        """Shift plain ring elements right by `bits` (default f) with arithmetic (sign) semantics.

        This is floor division by 2^bits of the signed value: the plain counterpart of
        `additive.truncate_share`.
        """
        shift = self.frac_bits if bits is None else bits
        if not 0 <= shift < 64:
            raise CryptoError(f"truncation shift must be in 0..63, got {shift}")
        return (_as_u64(u).view(np.int64) >> np.int64(shift)).view(np.uint64)

    def mul(self, a: npt.ArrayLike, b: npt.ArrayLike) -> U64Array:
        """Multiply two plain encodings in the ring and truncate back to f fractional bits."""
        prod: U64Array = _as_u64(a) * _as_u64(b)
        return self.truncate(prod)


def _as_u64(u: npt.ArrayLike) -> U64Array:
    arr = np.asarray(u)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == np.int64:
        return arr.view(np.uint64)
    raise CryptoError(f"ring elements must be uint64 (or int64), got dtype {arr.dtype}")
