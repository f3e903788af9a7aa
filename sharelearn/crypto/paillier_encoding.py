"""Signed fixed-point encoding and plaintext packing for the additive HE schemes.

A real x is encoded as the integer round(x * 2^f) (`f` = `frac_bits`, resolution 2^-f, rounding
error <= 2^-(f+1)). Integers are encoded exactly with f = 0. A signed integer v becomes the residue
v mod P of the plaintext modulus P (n for Paillier, the secret p for Okamoto–Uchiyama).

Overflow band (python-paillier's scheme): only |v| <= max_int is a valid plaintext, with
max_int ~ P / 3. Decoding maps [0, max_int] to itself and [P - max_int, P) to negatives; a residue in
the middle third can only come from an overflow (a sum or product that wrapped around P) and raises
`CryptoError` instead of returning garbage.

Packing (for SecureBoost's (g, h) pairs and aggregated gradients): `slots` fixed-point values share
one plaintext, each in a field of `value_bits + headroom_bits` bits. Values are biased by
2^(value_bits-1) to make them non-negative, so adding `w` packed plaintexts leaves each field below
w * 2^value_bits; with w <= 2^headroom_bits no field can carry into its neighbour. The ciphertext
array tracks w (its `weight`) and raises `CryptoError` before an operation could exceed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.types import Wire

__all__ = [
    "DEFAULT_FRAC_BITS",
    "MAX_FRAC_BITS",
    "Encoded",
    "ObjArray",
    "PackSpec",
    "decode_signed",
    "encode",
    "pack",
    "to_numbers",
    "unpack",
]

ObjArray = npt.NDArray[np.object_]

# 2^-32 ~ 2.3e-10: far below float32 noise in gradients, and 64-bit products of two such values
# still leave > 1900 bits of headroom below n / 3 for a 2048-bit key.
DEFAULT_FRAC_BITS = 32
MAX_FRAC_BITS = 1024  # products accumulate frac bits; beyond this something is wrong


@dataclass(frozen=True, slots=True)
class PackSpec:
    """Layout of packed plaintexts.

    Attributes:
        slots: values per plaintext.
        value_bits: bits of one encoded value including its sign; |round(x * 2^f)| < 2^(value_bits-1).
        headroom_bits: spare bits per slot; a packed ciphertext absorbs up to 2^headroom_bits summands.
        frac_bits: fixed-point fraction bits f of every value.
    """

    slots: int
    value_bits: int
    headroom_bits: int
    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ConfigError(f"pack.slots must be >= 1, got {self.slots}")
        if not 2 <= self.value_bits <= 512:
            raise ConfigError(f"pack.value_bits must be in 2..512, got {self.value_bits}")
        if not 0 <= self.headroom_bits <= 64:
            raise ConfigError(f"pack.headroom_bits must be in 0..64, got {self.headroom_bits}")
        if not 0 <= self.frac_bits < self.value_bits:
            raise ConfigError(f"pack.frac_bits must be in 0..value_bits-1, got {self.frac_bits}")

    @property
    def slot_bits(self) -> int:
        return self.value_bits + self.headroom_bits

    @property
    def total_bits(self) -> int:
        return self.slots * self.slot_bits

    @property
    def capacity(self) -> int:
        """How many packed plaintexts may be summed before a slot could overflow."""
        return 1 << self.headroom_bits

    @property
    def bias(self) -> int:
        return 1 << (self.value_bits - 1)

    def to_wire(self) -> list[Wire]:
        return [self.slots, self.value_bits, self.headroom_bits, self.frac_bits]


@dataclass(frozen=True, slots=True)
class Encoded:
    """Integers ready to encrypt: signed Python ints (object array), their scale and packing."""

    ints: ObjArray
    frac_bits: int = 0
    pack: PackSpec | None = None
    weight: int = 1


def _obj(values: list[int], shape: tuple[int, ...]) -> ObjArray:
    return np.fromiter(values, dtype=object, count=len(values)).reshape(shape)


def _float_to_ints(x: npt.NDArray[np.floating[Any]], frac_bits: int) -> ObjArray:
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x.ravel()))[0])
        raise CryptoError(f"cannot encode non-finite value {x.ravel()[bad]} (flat index {bad})")
    with np.errstate(over="ignore"):
        scaled = np.rint(np.ldexp(x.astype(np.float64), frac_bits))  # exact: a power-of-2 scaling
    if scaled.size == 0 or float(np.max(np.abs(scaled))) < 2.0**62:
        return scaled.astype(np.int64).astype(object)
    if np.all(np.isfinite(scaled)):
        return _obj([int(v) for v in scaled.ravel().tolist()], x.shape)
    # x * 2^f beyond float range: scale exactly in rationals (round half to even, like rint)
    scale = 1 << frac_bits
    return _obj([round(Fraction(v) * scale) for v in x.astype(np.float64).ravel().tolist()], x.shape)


def _as_ints(x: npt.NDArray[Any]) -> ObjArray:
    if x.dtype.kind in "iub":
        return x.astype(np.int64).astype(object) if x.dtype != np.uint64 else x.astype(object)
    flat = x.ravel().tolist()
    if not all(isinstance(v, int) or hasattr(v, "bit_length") for v in flat):
        raise CryptoError("object arrays to encode must hold integers only")
    return _obj([int(v) for v in flat], x.shape)


def _check_range(ints: ObjArray, max_int: int) -> None:
    if ints.size == 0:
        return
    top = max(abs(int(v)) for v in ints.ravel().tolist())
    if top > max_int:
        raise CryptoError(
            f"overflow: an encoded value has {top.bit_length()} bits, the key allows "
            f"|v| <= max_int ({max_int.bit_length()} bits); use fewer frac_bits or a larger key"
        )


def encode(x: Any, *, frac_bits: int, max_int: int) -> Encoded:
    """Encode an array of ints (exactly, scale 2^0) or floats (scale 2^frac_bits).

    Raises:
        CryptoError: a non-finite float, a non-numeric value, or a value beyond max_int.
    """
    if not 0 <= frac_bits <= MAX_FRAC_BITS:
        raise CryptoError(f"frac_bits must be in 0..{MAX_FRAC_BITS}, got {frac_bits}")
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        ints, frac = _float_to_ints(arr, frac_bits), frac_bits
    elif arr.dtype.kind in "iubO":
        ints, frac = _as_ints(arr), 0
    else:
        raise CryptoError(f"cannot encode an array of dtype {arr.dtype}")
    enc = Encoded(_obj(np.ravel(ints).tolist(), arr.shape), frac)
    _check_range(enc.ints, max_int)
    return enc


def decode_signed(residues: list[int], modulus: int, max_int: int) -> list[int]:
    """Map residues mod `modulus` back to signed ints; the middle band is an overflow.

    Raises:
        CryptoError: a residue lies in (max_int, modulus - max_int), i.e. the result overflowed.
    """
    low = modulus - max_int
    out = [r if r <= max_int else r - modulus for r in residues]
    bad = [i for i, r in enumerate(residues) if max_int < r < low]
    if bad:
        raise CryptoError(
            f"overflow detected on decryption: {len(bad)} of {len(residues)} values lie in the "
            f"overflow band (first at flat index {bad[0]}); a sum or product exceeded max_int"
        )
    return out


def to_numbers(ints: list[int], shape: tuple[int, ...], frac_bits: int) -> npt.NDArray[Any]:
    """Turn decoded ints into float64 (frac_bits > 0), int64 (if they fit) or an object array."""
    if frac_bits > 0:
        scale = 1 << frac_bits
        try:
            vals = [v / scale for v in ints]  # exact int / int division, correctly rounded
        except OverflowError as exc:
            raise CryptoError(f"decoded value too large for float64 (frac_bits={frac_bits})") from exc
        return np.asarray(vals, dtype=np.float64).reshape(shape)
    if all(-(1 << 63) <= v < (1 << 63) for v in ints):
        return np.asarray(ints, dtype=np.int64).reshape(shape)
    return _obj(ints, shape)


def pack(x: Any, spec: PackSpec, *, max_int: int) -> Encoded:
    """Pack the last axis of `x` (length spec.slots) into one plaintext per row.

    Raises:
        CryptoError: wrong last axis, a value outside +-2^(value_bits-1) after scaling, or a layout
            that does not fit below max_int.
    """
    arr = np.asarray(x)
    if arr.ndim < 1 or arr.shape[-1] != spec.slots:
        raise CryptoError(f"pack expects a last axis of {spec.slots} slots, got shape {arr.shape}")
    if spec.total_bits >= max_int.bit_length():
        raise CryptoError(
            f"a packed plaintext needs {spec.total_bits} bits but the key allows {max_int.bit_length() - 1}"
        )
    enc = encode(arr, frac_bits=spec.frac_bits, max_int=max_int)
    ints = enc.ints if arr.dtype.kind == "f" else enc.ints * (1 << spec.frac_bits)
    flat = ints.ravel().tolist()
    if any(not -spec.bias <= v < spec.bias for v in flat):
        raise CryptoError(f"a value does not fit the pack's {spec.value_bits}-bit slots (precision loss)")
    shifts = np.array([s * spec.slot_bits for s in range(spec.slots)], dtype=object)
    packed = ((ints + spec.bias) << shifts).sum(axis=-1)
    return Encoded(np.asarray(packed, dtype=object).reshape(arr.shape[:-1]), spec.frac_bits, spec, 1)


def unpack(ints: list[int], shape: tuple[int, ...], spec: PackSpec, weight: int) -> npt.NDArray[np.float64]:
    """Split packed plaintexts (non-negative residues) into floats of shape `shape + (slots,)`.

    Raises:
        CryptoError: a plaintext exceeds the packed layout (overflow or wrong key).
    """
    if any(not 0 <= v < (1 << spec.total_bits) for v in ints):
        raise CryptoError(f"a packed plaintext exceeds its {spec.total_bits}-bit layout (overflow)")
    if weight > spec.capacity:
        raise CryptoError(f"packed weight {weight} exceeds capacity {spec.capacity}")
    obj = _obj(ints, (len(ints), 1))
    shifts = np.array([[s * spec.slot_bits for s in range(spec.slots)]], dtype=object)
    fields = (obj >> shifts) & ((1 << spec.slot_bits) - 1)
    vals = (fields - weight * spec.bias).ravel().tolist()
    scale = float(math.ldexp(1.0, -spec.frac_bits))
    return (np.asarray([float(v) for v in vals], dtype=np.float64) * scale).reshape((*shape, spec.slots))
