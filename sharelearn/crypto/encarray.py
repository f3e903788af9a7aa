"""EncArray: a numpy-shaped batch of additively homomorphic ciphertexts, scheme-agnostic.

Paillier and Okamoto–Uchiyama keys both satisfy `HEPublicKey` / `HEPrivateKey`; every operation
here only needs the ciphertext modulus, a deterministic encoding of plaintexts (g^m) and random
masks (encryptions of zero). In both schemes Enc(a) * Enc(b) = Enc(a + b) and Enc(a)^k = Enc(k * a).

Results of homomorphic operations are *not* re-randomised (a product with 0 is the constant 1, a
sum reveals its summands to whoever knows them); call `rerandomize()` before sending a result to the
key owner when its inputs must stay hidden.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import gmpy2
import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError, DecodeError
from sharelearn.core.executor import Executor
from sharelearn.core.types import Wire
from sharelearn.crypto import modexp
from sharelearn.crypto.modexp import Mpz, RandBytes
from sharelearn.crypto.paillier_encoding import (
    DEFAULT_FRAC_BITS,
    MAX_FRAC_BITS,
    Encoded,
    ObjArray,
    PackSpec,
    decode_signed,
    encode,
    to_numbers,
    unpack,
)

__all__ = [
    "DEFAULT_KEY_BITS",
    "MAX_KEY_BITS",
    "MIN_KEY_BITS",
    "EncArray",
    "HEPrivateKey",
    "HEPublicKey",
    "PublicKeyInfo",
    "add_all",
    "concatenate",
    "decrypt",
    "encrypt",
    "key_fingerprint",
    "matmul_plain",
]

DEFAULT_KEY_BITS = 2048  # ~112-bit security (NIST SP 800-57 Part 1, Table 2)
MIN_KEY_BITS = 1024  # ~80-bit security: for tests only
MAX_KEY_BITS = 8192
MAX_WIRE_NDIM = 8


class HEPublicKey(Protocol):
    """What EncArray needs from a public key."""

    @property
    def scheme(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def cipher_modulus(self) -> Mpz: ...
    @property
    def max_int(self) -> int: ...
    def encrypt_ints(
        self, ms: list[int], *, rng: RandBytes | None = None, executor: Executor | None = None
    ) -> list[Mpz]: ...
    def encode_plain(self, ms: list[int]) -> list[Mpz]: ...
    def random_masks(
        self, count: int, *, rng: RandBytes | None = None, executor: Executor | None = None
    ) -> list[Mpz]: ...
    def to_wire(self) -> dict[str, Wire]: ...


class HEPrivateKey(Protocol):
    """What decryption needs from a private key."""

    @property
    def public(self) -> HEPublicKey: ...
    @property
    def plaintext_modulus(self) -> int: ...
    def decrypt_residues(self, cts: list[Mpz], *, executor: Executor | None = None) -> list[int]: ...


class PublicKeyInfo:
    """What a Paillier and an OU public key say about themselves: scheme, size, a safe repr.

    A mixin of the schemes' frozen key dataclasses (declared with `repr=False`, so that this
    `__repr__`, which shows no key material beyond its size and fingerprint, is the one used).
    """

    __slots__ = ()
    SCHEME: ClassVar[str] = ""
    n: Mpz
    key_id: str

    def __repr__(self) -> str:
        return f"{self.SCHEME}.PublicKey(bits={self.bits}, key_id={self.key_id})"

    @property
    def scheme(self) -> str:
        return self.SCHEME

    @property
    def bits(self) -> int:
        return int(self.n.bit_length())


def key_fingerprint(scheme: str, modulus: int) -> str:
    """A short public key id (16 hex digits of SHA-256) for error messages and wire checks."""
    raw = int(modulus).to_bytes((int(modulus).bit_length() + 7) // 8, "big")
    return hashlib.sha256(scheme.encode() + b"\x00" + raw).hexdigest()[:16]


def _obj(values: Sequence[Any], shape: tuple[int, ...]) -> ObjArray:
    # fromiter is ~40x faster than slice assignment, which probes every mpz for the sequence protocol
    return np.fromiter(values, dtype=object, count=len(values)).reshape(shape)


@dataclass(frozen=True, slots=True, eq=False)
class EncArray:
    """Ciphertexts (gmpy2 mpz, object array) under one key, with a fixed-point scale and packing.

    Attributes:
        pk: the public key.
        ct: ciphertexts reduced mod pk.cipher_modulus; numpy shape semantics.
        frac_bits: plaintexts are round(x * 2^frac_bits).
        pack: packed layout, or None.
        weight: packed summands absorbed so far (see `paillier_encoding`).
    """

    pk: HEPublicKey
    ct: ObjArray
    frac_bits: int = 0
    pack: PackSpec | None = None
    weight: int = 1

    __array_ufunc__ = None  # numpy then defers `ndarray op EncArray` to our reflected methods

    def __repr__(self) -> str:
        pk = self.pk
        return f"EncArray({pk.scheme}, shape={self.shape}, frac_bits={self.frac_bits}, key_id={pk.key_id})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ct.shape)

    @property
    def ndim(self) -> int:
        return int(self.ct.ndim)

    @property
    def size(self) -> int:
        return int(self.ct.size)

    def __len__(self) -> int:
        if self.ct.ndim == 0:
            raise TypeError("len() of a 0-d EncArray")
        return int(self.ct.shape[0])

    def _with(self, ct: Any, **changes: Any) -> EncArray:
        arr = ct if isinstance(ct, np.ndarray) else _obj([ct], ())
        return dataclasses.replace(self, ct=arr, **changes)

    def __getitem__(self, key: Any) -> EncArray:
        return self._with(self.ct[key])

    def reshape(self, *shape: Any) -> EncArray:
        return self._with(self.ct.reshape(*shape))

    @property
    def T(self) -> EncArray:
        return self._with(self.ct.T)

    # -- addition -------------------------------------------------------------------------------
    def _check_key(self, other: EncArray) -> None:
        if other.pk.key_id != self.pk.key_id or other.pk.scheme != self.pk.scheme:
            raise CryptoError(
                f"ciphertexts under different keys: {self.pk.scheme}/{self.pk.key_id} "
                f"vs {other.pk.scheme}/{other.pk.key_id}"
            )

    def rescale(self, frac_bits: int) -> EncArray:
        """Raise the fixed-point scale to `frac_bits` (multiplies plaintexts by 2^diff)."""
        diff = frac_bits - self.frac_bits
        if diff < 0 or frac_bits > MAX_FRAC_BITS:
            raise CryptoError(f"cannot rescale from frac_bits={self.frac_bits} to {frac_bits}")
        if diff == 0:
            return self
        if self.pack is not None:
            raise CryptoError("packed ciphertexts have a fixed scale; cannot rescale")
        flat = modexp.powmod(self.ct.ravel().tolist(), 1 << diff, self.pk.cipher_modulus)
        return self._with(_obj(flat, self.shape), frac_bits=frac_bits)

    def _weight_after(self, weight: int) -> int:
        if self.pack is not None and weight > self.pack.capacity:
            raise CryptoError(
                f"packed ciphertext would absorb {weight} summands, its slots hold {self.pack.capacity} "
                f"(headroom_bits={self.pack.headroom_bits}); unpack earlier or use more headroom"
            )
        return weight

    def _pad_weights(self, ct: ObjArray, weights: Any, target: int) -> ObjArray:
        """Add encodings of packed zeros so every element's weight becomes `target`.

        Unpacking subtracts weight * bias from each slot, so all elements of a packed array must
        share one weight; a zero value packs to `bias` in each slot.
        """
        spec = self.pack
        deficit = np.broadcast_to(target - np.asarray(weights, dtype=object), ct.shape).ravel().tolist()
        if spec is None or not any(deficit):
            return ct
        zero = sum(spec.bias << (s * spec.slot_bits) for s in range(spec.slots))
        gm = _obj(self.pk.encode_plain([int(d) * zero for d in deficit]), ct.shape)
        return np.asarray((ct * gm) % self.pk.cipher_modulus)

    def __add__(self, other: Any) -> EncArray:
        mod = self.pk.cipher_modulus
        if isinstance(other, EncArray):
            self._check_key(other)
            if self.pack != other.pack:
                raise CryptoError("cannot add packed and unpacked (or differently packed) ciphertexts")
            frac = max(self.frac_bits, other.frac_bits)
            a, b = self.rescale(frac), other.rescale(frac)
            weight = self._weight_after(self.weight + other.weight)
            return self._with((a.ct * b.ct) % mod, frac_bits=frac, weight=weight)
        enc, base = self._plain_operand(other)
        gm = np.asarray(_obj(self.pk.encode_plain(enc.ints.ravel().tolist()), enc.ints.shape))
        weight = self._weight_after(self.weight + enc.weight) if self.pack else 1
        return base._with((base.ct * gm) % mod, weight=weight)

    __radd__ = __add__

    def _plain_operand(self, other: Any) -> tuple[Encoded, EncArray]:
        if isinstance(other, Encoded):
            if other.pack != self.pack or other.frac_bits != self.frac_bits:
                raise CryptoError("encoded operand's packing / frac_bits differ from the ciphertexts'")
            return other, self
        if self.pack is not None:
            raise CryptoError("add plaintexts to packed ciphertexts as `pack(...)` results of the same spec")
        arr = np.asarray(other)
        base = self
        if arr.dtype.kind == "f" and self.frac_bits == 0:
            base = self.rescale(DEFAULT_FRAC_BITS)
        enc = encode(arr, frac_bits=base.frac_bits, max_int=self.pk.max_int)
        if enc.frac_bits != base.frac_bits:  # integers: scale up exactly
            enc = Encoded(enc.ints * (1 << base.frac_bits), base.frac_bits)
        return enc, base

    def __neg__(self) -> EncArray:
        if self.pack is not None:
            raise CryptoError("cannot negate packed ciphertexts (slots are biased to be non-negative)")
        inv = modexp.batch_invert(self.ct.ravel().tolist(), self.pk.cipher_modulus)
        return self._with(_obj(inv, self.shape))

    def __sub__(self, other: Any) -> EncArray:
        if isinstance(other, EncArray):
            return self + (-other)
        if isinstance(other, Encoded):
            return self + dataclasses.replace(other, ints=-other.ints)
        return self.__add__(-np.asarray(other))

    def __rsub__(self, other: Any) -> EncArray:
        return (-self).__add__(other)

    # -- multiplication by plaintexts -----------------------------------------------------------
    def __mul__(self, other: Any) -> EncArray:
        return self.mul(other)

    __rmul__ = __mul__

    def mul(
        self, k: Any, *, frac_bits: int = DEFAULT_FRAC_BITS, executor: Executor | None = None
    ) -> EncArray:
        """Multiply by plaintext ints or floats (floats encoded with `frac_bits`), broadcasting.

        The exponentiations run on `executor` (None: in the calling thread).
        """
        if isinstance(k, EncArray):
            raise CryptoError("additive HE cannot multiply two ciphertexts; multiply by a plaintext")
        enc = encode(np.asarray(k), frac_bits=frac_bits, max_int=self.pk.max_int)
        weight = self.weight
        if self.pack is not None:
            if enc.frac_bits or any(v < 0 for v in enc.ints.ravel().tolist()):
                raise CryptoError("packed ciphertexts can only be multiplied by non-negative integers")
            weight = self._weight_after(self.weight * max([1, *enc.ints.ravel().tolist()]))
        ct, ks = np.broadcast_arrays(self.ct, enc.ints)
        flat = _scale(ct.ravel().tolist(), ks.ravel().tolist(), self.pk.cipher_modulus, executor)
        out_frac = self.frac_bits + enc.frac_bits
        if out_frac > MAX_FRAC_BITS:
            raise CryptoError(f"fixed-point scale grew to {out_frac} fraction bits (> {MAX_FRAC_BITS})")
        out = _obj(flat, ct.shape)
        if self.pack is not None:
            out = self._pad_weights(out, ks * self.weight, weight)
        return self._with(out, frac_bits=out_frac, weight=weight)

    def __rmatmul__(self, other: Any) -> EncArray:
        return matmul_plain(other, self)

    def __matmul__(self, other: Any) -> EncArray:
        w = np.asarray(other)
        if self.ndim == 1 or w.ndim == 1:
            return matmul_plain(w.T, self) if self.ndim == 1 else matmul_plain(w, self.T)
        return matmul_plain(w.T, self.T).T

    # -- reductions and randomness --------------------------------------------------------------
    def sum(self, axis: int | None = None) -> EncArray:
        """Sum along `axis` (all axes when None) with a pairwise product tree."""
        mod = self.pk.cipher_modulus
        ct = self.ct.reshape(1, -1) if axis is None else np.moveaxis(self.ct, axis, -1)
        count = int(ct.shape[-1])
        if count == 0:
            ones = self.pk.encode_plain([0] * max(1, int(np.prod(ct.shape[:-1]))))
            return self._with(_obj(ones, ct.shape[:-1]).reshape(() if axis is None else ct.shape[:-1]))
        weight = self._weight_after(self.weight * count)
        while ct.shape[-1] > 1:
            half = ct.shape[-1] // 2
            paired = (ct[..., :half] * ct[..., half : 2 * half]) % mod
            ct = np.concatenate([paired, ct[..., 2 * half :]], axis=-1)
        out = ct[..., 0]
        return self._with(out.reshape(()) if axis is None else out, weight=weight)

    def rerandomize(self, *, rng: RandBytes | None = None, executor: Executor | None = None) -> EncArray:
        """Multiply every ciphertext by a fresh encryption of zero (same plaintexts, fresh randomness)."""
        masks = self.pk.random_masks(self.size, rng=rng, executor=executor)
        mod = self.pk.cipher_modulus
        flat = [c * r % mod for c, r in zip(self.ct.ravel().tolist(), masks, strict=True)]
        return self._with(_obj(flat, self.shape))

    # -- wire -----------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Wire]:
        """Encode as fixed-width little-endian ciphertexts plus shape, scale, packing and key id."""
        width = (int(self.pk.cipher_modulus.bit_length()) + 7) // 8
        data = b"".join([c.to_bytes(width, "little") for c in self.ct.ravel().tolist()])
        return {
            "scheme": self.pk.scheme,
            "key_id": self.pk.key_id,
            "shape": list(self.shape),
            "frac_bits": self.frac_bits,
            "pack": list(self.pack.to_wire()) if self.pack else None,
            "weight": self.weight,
            "width": width,
            "data": data,
        }

    @classmethod
    def from_wire(cls, data: Wire, pk: HEPublicKey) -> EncArray:
        """Decode and validate `to_wire` output for key `pk`.

        Raises:
            DecodeError: malformed fields, wrong sizes, or a value outside [1, modulus).
            CryptoError: the ciphertexts belong to a different key or scheme.
        """
        return _from_wire(data, pk)


def _field(data: dict[str, Wire], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise DecodeError(f"EncArray wire data lacks field {name!r}")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError(f"EncArray wire field {name!r} has type {type(value).__name__}")
    return value


def _from_wire(data: Wire, pk: HEPublicKey) -> EncArray:
    if not isinstance(data, dict):
        raise DecodeError(f"EncArray wire data must be a map, got {type(data).__name__}")
    scheme, key_id = _field(data, "scheme", str), _field(data, "key_id", str)
    if scheme != pk.scheme or key_id != pk.key_id:
        raise CryptoError(f"ciphertexts are for {scheme}/{key_id}, the key is {pk.scheme}/{pk.key_id}")
    shape = _field(data, "shape", list)
    if len(shape) > MAX_WIRE_NDIM or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise DecodeError(f"EncArray shape must be <= {MAX_WIRE_NDIM} non-negative ints, got {shape!r}")
    frac_bits, weight = _field(data, "frac_bits", int), _field(data, "weight", int)
    if not 0 <= frac_bits <= MAX_FRAC_BITS or weight < 1:
        raise DecodeError(f"EncArray frac_bits={frac_bits} / weight={weight} out of range")
    pack = _wire_pack(data.get("pack"), weight)
    mod = pk.cipher_modulus
    width = (int(mod.bit_length()) + 7) // 8
    got_width = _field(data, "width", int)
    if got_width != width:
        raise DecodeError(f"EncArray width {got_width} != {width} bytes for this key")
    raw = _field(data, "data", bytes)
    count = math.prod(shape)
    if len(raw) != count * width:
        raise DecodeError(f"EncArray data has {len(raw)} bytes, shape {shape} needs {count * width}")
    frm = gmpy2.mpz.from_bytes
    vals = [frm(raw[i : i + width], "little") for i in range(0, len(raw), width)]
    bad = [i for i, v in enumerate(vals) if not 0 < v < mod]
    if bad:
        raise DecodeError(f"EncArray value at flat index {bad[0]} is not in [1, modulus) ({len(bad)} bad)")
    return EncArray(pk, _obj(vals, tuple(shape)), frac_bits, pack, weight)


def _wire_pack(raw: Wire, weight: int) -> PackSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 4 or not all(isinstance(v, int) for v in raw):
        raise DecodeError(f"EncArray pack must be 4 ints, got {raw!r}")
    try:
        spec = PackSpec(*raw)  # type: ignore[arg-type]
    except Exception as exc:  # ConfigError from validation
        raise DecodeError(f"EncArray pack is invalid: {exc}") from exc
    if weight > spec.capacity:
        raise DecodeError(f"EncArray weight {weight} exceeds the pack's capacity {spec.capacity}")
    return spec


def _scale(cts: list[Mpz], ks: list[int], mod: Mpz, executor: Executor | None) -> list[Mpz]:
    """c_i^k_i mod `mod`; negative k via c^|k| and one batched inversion."""
    mags = [abs(int(k)) for k in ks]
    if len(set(mags)) == 1 and cts:
        out = modexp.powmod(cts, mags[0], mod, executor=executor)
    else:
        out = modexp.powmod(cts, mags, mod, executor=executor)
    neg = [i for i, k in enumerate(ks) if k < 0]
    if neg:
        inv = modexp.batch_invert([out[i] for i in neg], mod)
        for i, v in zip(neg, inv, strict=True):
            out[i] = v
    return out


def matmul_plain(x: Any, c: EncArray, *, frac_bits: int = DEFAULT_FRAC_BITS) -> EncArray:
    """Return x @ c for plaintext x ((R, N) or (N,)) and ciphertexts c ((N,) or (N, K)).

    Each output is a multi-exponentiation prod_i c_i^(x_ri) (Pippenger); negative entries use the
    inverted bases, computed once per column.
    """
    arr = np.asarray(x)
    enc = encode(arr, frac_bits=frac_bits, max_int=c.pk.max_int)
    a = enc.ints if enc.ints.ndim == 2 else enc.ints.reshape(1, -1)
    cc = c.ct if c.ndim == 2 else c.ct.reshape(-1, 1)
    if a.ndim != 2 or cc.ndim != 2 or a.shape[1] != cc.shape[0]:
        raise CryptoError(f"matmul shapes do not align: plain {arr.shape} @ encrypted {c.shape}")
    weight = c.weight
    if c.pack is not None:
        if enc.frac_bits or (a.size and min(a.ravel().tolist()) < 0):
            raise CryptoError("packed ciphertexts can only be combined with non-negative integer matrices")
        row_weights = [c.weight * int(s) for s in a.sum(axis=1).tolist()]
        weight = c._weight_after(max([1, *row_weights]))
    mod = c.pk.cipher_modulus
    pos, neg = np.where(a > 0, a, 0), np.where(a < 0, -a, 0)
    has_neg = bool(np.any(neg != 0))
    cols = []
    for k in range(cc.shape[1]):
        bases = cc[:, k].tolist()
        if has_neg:
            cols.append(modexp.multi_exp(bases + modexp.batch_invert(bases, mod), np.hstack([pos, neg]), mod))
        else:
            cols.append(modexp.multi_exp(bases, pos, mod))
    out = _obj([v for row in zip(*cols, strict=True) for v in row], (a.shape[0], cc.shape[1]))
    if c.pack is not None:
        out = c._pad_weights(out, _obj(row_weights, (a.shape[0], 1)), weight)
    shape = (*(arr.shape[:-1] if arr.ndim == 2 else ()), *(c.shape[1:] if c.ndim == 2 else ()))
    return c._with(out.reshape(shape), frac_bits=c.frac_bits + enc.frac_bits, weight=weight)


def concatenate(arrays: Sequence[EncArray], axis: int = 0) -> EncArray:
    """Join ciphertext arrays of one key along `axis` (scales are aligned to the largest)."""
    if not arrays:
        raise CryptoError("concatenate needs at least one EncArray")
    first = arrays[0]
    for other in arrays[1:]:
        first._check_key(other)
        if other.pack != first.pack:
            raise CryptoError("cannot concatenate differently packed ciphertexts")
    frac = max(a.frac_bits for a in arrays)
    weight = max(a.weight for a in arrays)
    parts = [a._pad_weights(a.rescale(frac).ct, a.weight, weight) for a in arrays]
    return first._with(np.concatenate(parts, axis=axis), frac_bits=frac, weight=weight)


def add_all(arrays: Sequence[EncArray]) -> EncArray:
    """Sum a non-empty sequence of ciphertext arrays (same key), broadcasting like numpy."""
    if not arrays:
        raise CryptoError("add_all needs at least one EncArray")
    out = arrays[0]
    for other in arrays[1:]:
        out = out + other
    return out


def encrypt(
    pk: HEPublicKey,
    x: Any,
    *,
    frac_bits: int = DEFAULT_FRAC_BITS,
    rng: RandBytes | None = None,
    executor: Executor | None = None,
) -> EncArray:
    """Encrypt ints exactly, floats as fixed point with `frac_bits`, or an `Encoded` (e.g. packed).

    The batch runs on `executor` (None: in the calling thread); with a seeded `rng` the
    ciphertexts are the same on every executor (the randomness is drawn before the batch splits).
    """
    enc = x if isinstance(x, Encoded) else encode(x, frac_bits=frac_bits, max_int=pk.max_int)
    flat = pk.encrypt_ints(enc.ints.ravel().tolist(), rng=rng, executor=executor)
    return EncArray(pk, _obj(flat, enc.ints.shape), enc.frac_bits, enc.pack, enc.weight)


def decrypt(sk: HEPrivateKey, c: EncArray, *, executor: Executor | None = None) -> npt.NDArray[Any]:
    """Decrypt to float64 (frac_bits > 0), int64 or Python ints; packed arrays gain a slots axis.

    The exponentiations run on `executor` (None: in the calling thread).

    Raises:
        CryptoError: wrong key, or an overflow detected by the overflow band / packed layout.
    """
    if not isinstance(c, EncArray):
        raise CryptoError(f"decrypt expects an EncArray, got {type(c).__name__}")
    if c.pk.key_id != sk.public.key_id or c.pk.scheme != sk.public.scheme:
        raise CryptoError(f"ciphertexts are for key {c.pk.key_id}, the private key is {sk.public.key_id}")
    residues = sk.decrypt_residues(c.ct.ravel().tolist(), executor=executor)
    if c.pack is not None:
        return unpack(residues, c.shape, c.pack, c.weight)
    signed = decode_signed(residues, sk.plaintext_modulus, sk.public.max_int)
    return to_numbers(signed, c.shape, c.frac_bits)
