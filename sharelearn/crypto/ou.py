"""Okamoto–Uchiyama encryption (Okamoto & Uchiyama, EUROCRYPT 1998) behind the Paillier interface.

Scheme: n = p^2 q (p, q primes of k ~ |n| / 3 bits), g in Z_n^* with g^(p-1) mod p^2 of order p,
h = g^n mod n. Enc(m) = g^m h^r mod n for 0 <= m < p; Dec(c) = L(c^(p-1) mod p^2) / L(g^(p-1) mod p^2)
mod p with L(x) = (x - 1) / p. Ciphertexts live mod n (half the size of Paillier's n^2), so every
operation is about 3-4x cheaper than Paillier at the same modulus size; the price is a plaintext
space of only ~k bits, and that p stays secret (the overflow band is based on the public |p|).

Fast encryption: both g^m and h^r come from fixed-base window tables (a few dozen multiplications
mod n, no squarings). Negative m uses a table of g^-1. The randomness r is a short exponent of
l = 2 * kappa bits (kappa = strength of n per NIST SP 800-57; l = 224 for 2048-bit n). Security:
OU is IND-CPA under the p-subgroup assumption (h^r for uniform r is indistinguishable from g^r);
with short r we additionally rely on the short-exponent assumption in a group of unknown order,
whose best known attacks (Pollard lambda, BSGS) cost 2^(l/2) = 2^kappa, matching factoring n. This
is the same trade-off as DJN-Paillier (see `paillier`) and as the OU implementations in HEU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import gmpy2
import numpy as np

from sharelearn.core.errors import CryptoError, DecodeError
from sharelearn.core.executor import Executor
from sharelearn.core.types import Wire
from sharelearn.crypto import fixedbase, modexp
from sharelearn.crypto.encarray import (
    DEFAULT_KEY_BITS,
    MAX_KEY_BITS,
    MIN_KEY_BITS,
    PublicKeyInfo,
    key_fingerprint,
)
from sharelearn.crypto.modexp import Mpz, RandBytes

__all__ = ["PrivateKey", "PublicKey", "keygen"]


def _windows(mod_bits: int) -> tuple[int, int]:
    """(h table, g table) window bits: 12-bit windows for h at 2048 bits cost 19 multiplications per
    224-bit exponent (a 24 MB table built in ~0.12 s); g's table grows lazily with |m|, so 10 bits."""
    return (12, 10) if mod_bits >= 2000 else (8, 8)


def _table(base: Mpz, n: Mpz, window_bits: int) -> fixedbase.FixedBaseTable:
    return fixedbase.table(base, n, window_bits)


@dataclass(frozen=True, slots=True, repr=False)
class PublicKey(PublicKeyInfo):
    """OU public key: n = p^2 q, g, h = g^n mod n, the public size of p, and the randomness length."""

    n: Mpz
    g: Mpz
    h: Mpz
    plain_bits: int
    rand_bits: int
    g_inv: Mpz = field(init=False, repr=False)
    key_id: str = field(init=False)
    SCHEME: ClassVar[str] = "ou"

    def __post_init__(self) -> None:
        n, g, h = gmpy2.mpz(self.n), gmpy2.mpz(self.g), gmpy2.mpz(self.h)
        bits = int(n.bit_length())
        if not MIN_KEY_BITS - 8 <= bits <= MAX_KEY_BITS or n % 2 == 0:
            raise CryptoError(f"OU modulus must be odd with ~{MIN_KEY_BITS}..{MAX_KEY_BITS} bits, got {bits}")
        if not bits // 3 - 8 <= self.plain_bits <= bits // 3 + 8:
            raise CryptoError(f"OU plain_bits {self.plain_bits} does not match a {bits}-bit n = p^2 q")
        kappa = modexp.security_bits(bits + 8)
        if not 2 * kappa <= self.rand_bits <= bits:
            raise CryptoError(f"rand_bits must be in {2 * kappa}..{bits}, got {self.rand_bits}")
        for name, v in (("g", g), ("h", h)):
            if not 1 < v < n or gmpy2.gcd(v, n) != 1:
                raise CryptoError(f"OU {name} must be a unit modulo n")
        for name, v in (("n", n), ("g", g), ("h", h)):
            object.__setattr__(self, name, v)
        object.__setattr__(self, "g_inv", gmpy2.invert(g, n))
        object.__setattr__(self, "key_id", key_fingerprint("ou", int(n)))

    @property
    def cipher_modulus(self) -> Mpz:
        return self.n

    @property
    def max_int(self) -> int:
        # p > 2^(plain_bits-1) (its top two bits are set), so this is below p / 3: the band between
        # max_int and p - max_int detects overflow without revealing p.
        return (1 << (self.plain_bits - 1)) // 3

    def encode_plain(self, ms: list[int]) -> list[Mpz]:
        """Return g^m mod n for each signed m (g^-1 table for negatives): encryption with r = 0."""
        wg = _windows(self.bits)[1]
        negative = np.fromiter((m < 0 for m in ms), dtype=np.bool_, count=len(ms))
        digits = modexp.int_digits([abs(m) for m in ms], wg)
        g_table, inv_table = _table(self.g, self.n, wg), _table(self.g_inv, self.n, wg)
        return g_table.pow_digits(digits, negative=negative, inverse=inv_table)

    def random_masks(
        self, count: int, *, rng: RandBytes | None = None, executor: Executor | None = None
    ) -> list[Mpz]:
        """Return `count` fresh h^r (encryptions of 0) with short random r."""
        return self.encrypt_ints([0] * count, rng=rng, executor=executor)

    def encrypt_ints(
        self, ms: list[int], *, rng: RandBytes | None = None, executor: Executor | None = None
    ) -> list[Mpz]:
        """Encrypt signed ints (|m| <= max_int, checked by the caller's encoding): g^m h^r, one
        product over three fixed-base tables (g for m > 0, g^-1 for m < 0, h for r)."""
        wh, wg = _windows(self.bits)
        h_table = _table(self.h, self.n, wh)
        exps = fixedbase.random_exponents(len(ms), self.rand_bits, wh, rng)
        digits = [
            modexp.int_digits([abs(m) for m in ms], wg),
            fixedbase.exponent_digits(exps, self.rand_bits, wh),
        ]
        negative = np.fromiter((m < 0 for m in ms), dtype=np.bool_, count=len(ms))
        tables = [_table(self.g, self.n, wg), _table(self.g_inv, self.n, wg), h_table]
        return fixedbase.fixed_base_products(tables, digits, negative=negative, executor=executor)

    def to_wire(self) -> dict[str, Wire]:
        return {
            "scheme": "ou",
            "n": _to_bytes(self.n),
            "g": _to_bytes(self.g),
            "h": _to_bytes(self.h),
            "plain_bits": self.plain_bits,
            "rand_bits": self.rand_bits,
        }

    @classmethod
    def from_wire(cls, data: Wire) -> PublicKey:
        """Decode and validate a public key sent by `to_wire`.

        Raises:
            DecodeError: malformed fields.
            CryptoError: values that do not form a valid key.
        """
        if not isinstance(data, dict) or data.get("scheme") != "ou":
            raise DecodeError("not an Okamoto–Uchiyama public key")
        raw = [data.get(k) for k in ("n", "g", "h")]
        plain_bits, rand_bits = data.get("plain_bits"), data.get("rand_bits")
        if not all(isinstance(v, bytes) and len(v) <= MAX_KEY_BITS // 8 for v in raw):
            raise DecodeError("OU public key needs bytes 'n', 'g', 'h' of at most MAX_KEY_BITS bits")
        if not isinstance(plain_bits, int) or not isinstance(rand_bits, int):
            raise DecodeError("OU public key needs int 'plain_bits' and 'rand_bits'")
        n, g, h = (gmpy2.mpz.from_bytes(v, "big") for v in raw)
        return cls(n, g, h, plain_bits, rand_bits)


def _to_bytes(v: Mpz) -> bytes:
    return bytes(v.to_bytes((int(v.bit_length()) + 7) // 8, "big"))


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """OU private key: p, q and the decryption constants."""

    public: PublicKey
    p: Mpz
    q: Mpz
    _consts: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        p, q = gmpy2.mpz(self.p), gmpy2.mpz(self.q)
        if p * p * q != self.public.n or p.bit_length() != self.public.plain_bits:
            raise CryptoError(f"p^2 q does not match the public key {self.public.key_id}")
        p2 = p * p
        lg = (gmpy2.powmod(self.public.g, p - 1, p2) - 1) // p
        if lg % p == 0:
            raise CryptoError("OU g has no order-p component modulo p^2")
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "_consts", (p2, gmpy2.invert(lg, p)))

    def __repr__(self) -> str:  # p and q must never reach logs or tracebacks
        return f"ou.PrivateKey(bits={self.public.bits}, key_id={self.public.key_id})"

    @property
    def plaintext_modulus(self) -> int:
        return int(self.p)

    def decrypt_residues(self, cts: list[Mpz], *, executor: Executor | None = None) -> list[int]:
        """Return m mod p for each ciphertext."""
        p = self.p
        p2, lg_inv = self._consts
        xs = modexp.powmod([c % p2 for c in cts], int(p - 1), p2, executor=executor)
        return [int((x - 1) // p * lg_inv % p) for x in xs]


def keygen(
    bits: int = DEFAULT_KEY_BITS, rng: RandBytes | None = None, *, rand_bits: int | None = None
) -> tuple[PublicKey, PrivateKey]:
    """Generate an OU key pair with n = p^2 q of about `bits` bits (p, q of bits // 3 bits each).

    Args:
        bits: modulus size (1024..8192).
        rng: random-bytes source; the OS CSPRNG when None. Seed it only in tests.
        rand_bits: short-exponent length of r; 2 * kappa when None (see the module docstring).
    """
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise CryptoError(f"OU key size must be in {MIN_KEY_BITS}..{MAX_KEY_BITS}, got {bits}")
    k = bits // 3
    while True:
        p, q = modexp.random_prime(k, rng), modexp.random_prime(k, rng)
        if p != q:
            break
    n, p2 = p * p * q, p * p
    while True:
        g = gmpy2.mpz(int.from_bytes(modexp.random_bytes(bits // 8 + 8, rng), "big")) % n
        if g > 1 and gmpy2.gcd(g, n) == 1 and gmpy2.powmod(g, p - 1, p2) % p2 != 1:
            break
    pk = PublicKey(n, g, gmpy2.powmod(g, n, n), k, rand_bits or 2 * modexp.security_bits(bits))
    return pk, PrivateKey(pk, p, q)
