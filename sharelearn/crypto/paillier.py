"""Paillier encryption (Paillier 1999) with DJN-style fast encryption and CRT decryption.

Scheme: n = p q (p, q random primes of equal size), g = n + 1, so g^m = 1 + m n mod n^2 and the
plaintext part costs one multiplication. Enc(m) = (1 + m n) * r^n mod n^2.

Fast randomness (Damgård–Jurik–Nielsen 2010, "A generalization of Paillier's public-key system
with applications to electronic voting", IJIS 9(6), Sect. 4.2 / Jurik's thesis): the key holds
h = -x^2 mod n for a random x in Z_n^* and h_s = h^n mod n^2. Encryption uses r^n := h_s^a for a
random short exponent a, computed from a fixed-base window table of h_s (about l / w
multiplications, no squarings).

Security argument. Paillier is IND-CPA under the decisional composite residuosity (DCR) assumption:
a uniform n-th residue r^n mod n^2 is indistinguishable from a uniform element of Z_{n^2}^*. DJN
propose a uniform in [0, 2^ceil(k/2)) (k = |n|) and argue security under DCR plus the assumption
that h^a for such short a is indistinguishable from a uniform element of <h> (with overwhelming
probability a large subgroup of the Jacobi-symbol-1 units, of an order only the key owner knows).
We use a shorter exponent of
l = 2 * kappa bits, where kappa is the strength of the modulus (NIST SP 800-57: 112 for 2048-bit n,
so l = 224). This is the short-exponent assumption in a group of unknown order: the best known
attacks on an l-bit exponent are generic (Pollard's lambda / kangaroo, baby-step giant-step) and cost
2^(l/2) = 2^kappa, the same as factoring n; no better attack is known that exploits the structure
of Z_{n^2}^* without factoring n (van Oorschot–Wiener 1996; Koshiba–Kurosawa 2004 for the DDH
analogue). It is a stronger assumption than DCR alone; keys can carry rand_bits up to k/2 to get
DJN's original parameters (encryption then costs about k / (2 w) multiplications).
Like every DJN/HEU-style implementation this assumes an honestly generated key (semi-honest
model): a key owner who picks p - 1 smooth could take discrete logs of h_s^a and so undo a
re-randomisation; the key owner can decrypt anyway, but could then link ciphertexts.

Decryption uses CRT: m_p = L_p(c^(p-1) mod p^2) * h_p mod p with L_p(x) = (x - 1) / p and
h_p = L_p(g^(p-1) mod p^2)^-1 mod p (the same for q), then m = CRT(m_p, m_q); the two half-size
exponentiations run on the mbx kernels when available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import gmpy2

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


def _table_window(mod_bits: int) -> int:
    # 10-bit windows at 4096 bits: 23 multiplications per 224-bit exponent, a 12 MB table built in
    # ~0.1 s. Smaller (test) keys use 8 bits to keep the table build cheap.
    return 10 if mod_bits >= 4000 else 8


def _hs_table(hs: Mpz, n2: Mpz) -> fixedbase.FixedBaseTable:
    return fixedbase.table(hs, n2, _table_window(int(n2.bit_length())))


@dataclass(frozen=True, slots=True, repr=False)
class PublicKey(PublicKeyInfo):
    """Paillier public key (n, h_s = h^n mod n^2) and the short-exponent length `rand_bits`."""

    n: Mpz
    hs: Mpz
    rand_bits: int
    n2: Mpz = field(init=False, repr=False)
    key_id: str = field(init=False)
    SCHEME: ClassVar[str] = "paillier"

    def __post_init__(self) -> None:
        n = gmpy2.mpz(self.n)
        bits = int(n.bit_length())
        if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS or n % 2 == 0:
            raise CryptoError(
                f"Paillier modulus must be odd with {MIN_KEY_BITS}..{MAX_KEY_BITS} bits, got {bits}"
            )
        kappa = modexp.security_bits(bits)
        if not 2 * kappa <= self.rand_bits <= bits:
            raise CryptoError(
                f"rand_bits must be in {2 * kappa}..{bits} for a {bits}-bit key, got {self.rand_bits}"
            )
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "n2", n * n)
        hs = gmpy2.mpz(self.hs)
        if not 1 < hs < self.n2 or gmpy2.gcd(hs, n) != 1:
            raise CryptoError("Paillier h_s must be a unit modulo n^2")
        object.__setattr__(self, "hs", hs)
        object.__setattr__(self, "key_id", key_fingerprint("paillier", int(n)))

    @property
    def cipher_modulus(self) -> Mpz:
        return self.n2

    @property
    def max_int(self) -> int:
        return int(self.n) // 3

    def encode_plain(self, ms: list[int]) -> list[Mpz]:
        """Return g^m = 1 + m n mod n^2 for each (signed) plaintext m: encryption with r = 1."""
        n, n2 = self.n, self.n2
        return [(n * m + 1) % n2 for m in ms]

    def random_masks(
        self, count: int, *, rng: RandBytes | None = None, executor: Executor | None = None
    ) -> list[Mpz]:
        """Return `count` fresh h_s^a (random n-th residues, i.e. encryptions of 0)."""
        return self._masked(None, count, rng, executor)

    def encrypt_ints(
        self, ms: list[int], *, rng: RandBytes | None = None, executor: Executor | None = None
    ) -> list[Mpz]:
        """Encrypt signed ints (|m| <= max_int, checked by the caller's encoding)."""
        return self._masked((self.n, ms), len(ms), rng, executor)

    def _masked(
        self,
        affine: tuple[Mpz, list[int]] | None,
        count: int,
        rng: RandBytes | None,
        executor: Executor | None,
    ) -> list[Mpz]:
        table = _hs_table(self.hs, self.n2)
        exps = fixedbase.random_exponents(count, self.rand_bits, table.window_bits, rng)
        digits = fixedbase.exponent_digits(exps, self.rand_bits, table.window_bits)
        return fixedbase.fixed_base_products([table], [digits], affine=affine, executor=executor)

    def to_wire(self) -> dict[str, Wire]:
        return {
            "scheme": "paillier",
            "n": _to_bytes(self.n),
            "hs": _to_bytes(self.hs),
            "rand_bits": self.rand_bits,
        }

    @classmethod
    def from_wire(cls, data: Wire) -> PublicKey:
        """Decode and validate a public key sent by `to_wire`.

        Raises:
            DecodeError: malformed fields.
            CryptoError: values that do not form a valid key.
        """
        if not isinstance(data, dict) or data.get("scheme") != "paillier":
            raise DecodeError("not a Paillier public key")
        n, hs, rand_bits = data.get("n"), data.get("hs"), data.get("rand_bits")
        if not isinstance(n, bytes) or not isinstance(hs, bytes) or not isinstance(rand_bits, int):
            raise DecodeError("Paillier public key needs bytes 'n', 'hs' and int 'rand_bits'")
        if len(n) > MAX_KEY_BITS // 8 or len(hs) > MAX_KEY_BITS // 4:
            raise DecodeError("Paillier public key fields are too long")
        return cls(_from_bytes(n), _from_bytes(hs), rand_bits)


def _to_bytes(v: Mpz) -> bytes:
    return bytes(v.to_bytes((int(v.bit_length()) + 7) // 8, "big"))


def _from_bytes(b: bytes) -> Mpz:
    return gmpy2.mpz.from_bytes(b, "big")


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """Paillier private key: the factors p, q and the CRT constants derived from them."""

    public: PublicKey
    p: Mpz
    q: Mpz
    _crt: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        p, q = gmpy2.mpz(self.p), gmpy2.mpz(self.q)
        if p * q != self.public.n or p == q:
            raise CryptoError(f"p * q does not match the public key {self.public.key_id}")
        g = self.public.n + 1
        consts = []
        for a in (p, q):
            a2 = a * a
            la = (gmpy2.powmod(g, a - 1, a2) - 1) // a
            consts.append((a, a2, gmpy2.invert(la, a)))
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "_crt", (*consts, gmpy2.invert(q, p)))

    def __repr__(self) -> str:  # p and q must never reach logs or tracebacks
        return f"paillier.PrivateKey(bits={self.public.bits}, key_id={self.public.key_id})"

    @property
    def plaintext_modulus(self) -> int:
        return int(self.public.n)

    def decrypt_residues(self, cts: list[Mpz], *, executor: Executor | None = None) -> list[int]:
        """Return m mod n for each ciphertext (two half-size exponentiations each, CRT)."""
        (p, p2, hp), (q, q2, hq), q_inv = self._crt
        halves = []
        for a, a2, ha in ((p, p2, hp), (q, q2, hq)):
            xs = modexp.powmod([c % a2 for c in cts], int(a - 1), a2, executor=executor)
            halves.append([(x - 1) // a * ha % a for x in xs])
        return [int(mq + (mp - mq) * q_inv % p * q) for mp, mq in zip(halves[0], halves[1], strict=True)]


def keygen(
    bits: int = DEFAULT_KEY_BITS, rng: RandBytes | None = None, *, rand_bits: int | None = None
) -> tuple[PublicKey, PrivateKey]:
    """Generate a Paillier key pair with an n of exactly `bits` bits.

    Args:
        bits: modulus size (even, 1024..8192).
        rng: random-bytes source; the OS CSPRNG when None. Seed it only in tests.
        rand_bits: short-exponent length; 2 * kappa when None (see the module docstring).
    """
    if bits % 2 or not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise CryptoError(f"Paillier key size must be even and in {MIN_KEY_BITS}..{MAX_KEY_BITS}, got {bits}")
    while True:
        p, q = modexp.random_prime(bits // 2, rng), modexp.random_prime(bits // 2, rng)
        n = p * q
        if p != q and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1 and n.bit_length() == bits:
            break
    while True:
        x = gmpy2.mpz(int.from_bytes(modexp.random_bytes(bits // 8 + 8, rng), "big")) % n
        if x > 1 and gmpy2.gcd(x, n) == 1:
            break
    h = (-x * x) % n
    hs = gmpy2.powmod(h, n, n * n)
    pk = PublicKey(n, hs, rand_bits or 2 * modexp.security_bits(bits))
    return pk, PrivateKey(pk, p, q)
