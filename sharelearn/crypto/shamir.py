"""Shamir secret sharing over the Mersenne prime field F_p, p = 2^61 - 1 (Shamir 1979).

Used by secure aggregation (Bonawitz et al. 2017) to recover the seeds of dropped clients. Each
secret s is the constant term of a random polynomial of degree t - 1; party i (x = i + 1) holds
the value at x. Any t shares recover s by Lagrange interpolation at 0; fewer than t shares are
uniformly distributed and independent of s (perfect secrecy).

Vectorised: `split` shares m secrets at once, shape (m,) -> (n, m), with uint64 numpy. Field
products need 122 bits, so `_mulmod` splits each operand into 32-bit limbs and folds the partial
products using 2^61 = 1 (mod p); no Python-int loop per element. Lagrange coefficients are
computed once per set of x-coordinates with Python ints (t is small).

`split_bytes` / `recover_bytes` share byte strings (e.g. 32-byte PRG seeds) as 7-byte field
chunks preceded by a length element.

`split_at` and `recover_many` are the few-secrets, many-holders forms secure aggregation needs
(SecAgg+ shares a few seed words among a client's neighbours only; the server rebuilds one seed per
client): they evaluate every term of every polynomial in one `_mulmod` and sum the terms with
`_sum_mod`, a constant number of numpy calls instead of one Horner step (or one Lagrange term) per
coefficient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U64Array
from sharelearn.crypto.rng import Rng, random_u64

__all__ = [
    "CHUNK_BYTES",
    "PRIME",
    "lagrange_at_zero",
    "recover",
    "recover_bytes",
    "recover_many",
    "split",
    "split_at",
    "split_bytes",
]

PRIME = (1 << 61) - 1  # Mersenne: reduction mod p is a shift and an add
CHUNK_BYTES = 7  # 56-bit chunks always lie below p
_P = np.uint64(PRIME)
_MASK32 = np.uint64(0xFFFFFFFF)
_MAX_RESAMPLE = 64  # each draw is rejected with probability 2^-61; 64 rounds never all fail


def _reduce(x: U64Array) -> U64Array:
    """Reduce values < 2^64 modulo p (result in [0, p))."""
    r = (x & _P) + (x >> np.uint64(61))
    return np.where(r >= _P, r - _P, r)


def _mulmod(a: U64Array, b: U64Array) -> U64Array:
    """Multiply elementwise mod p for a, b in [0, p), without 128-bit integers."""
    a_lo, a_hi = a & _MASK32, a >> np.uint64(32)  # a_hi < 2^29
    b_lo, b_hi = b & _MASK32, b >> np.uint64(32)
    lo = a_lo * b_lo  # < 2^64
    mid = a_lo * b_hi + a_hi * b_lo  # < 2^62
    hi = a_hi * b_hi  # < 2^58
    # a*b = hi*2^64 + mid*2^32 + lo, and 2^64 = 8, 2^61 = 1 (mod p).
    mid_lo, mid_hi = mid & np.uint64((1 << 29) - 1), mid >> np.uint64(29)  # mid*2^32 = mid_lo*2^32 + mid_hi
    total = _reduce(lo) + (hi << np.uint64(3)) + (mid_lo << np.uint64(32)) + mid_hi  # < 2^63
    return _reduce(total)


def _addmod(a: U64Array, b: U64Array) -> U64Array:
    s = a + b  # < 2^62, no wrap
    return np.where(s >= _P, s - _P, s)


def _random_field(shape: tuple[int, ...], rng: Rng | None) -> U64Array:
    """Uniform elements of F_p by rejection sampling 61-bit values."""
    out = random_u64(shape, rng) & _P
    for _ in range(_MAX_RESAMPLE):
        bad = out == _P
        if not bad.any():
            return out
        out[bad] = random_u64(int(bad.sum()), rng) & _P
    raise CryptoError("field sampling failed repeatedly: the random source is broken")


def _check_params(n: int, t: int) -> None:
    if not 1 <= t <= n:
        raise CryptoError(f"Shamir needs 1 <= threshold <= n, got threshold={t}, n={n}")
    if n >= PRIME:
        raise CryptoError(f"Shamir supports fewer than {PRIME} parties, got {n}")


def split(secrets: npt.ArrayLike, n: int, threshold: int, rng: Rng | None = None) -> U64Array:
    """Share each field element of `secrets` (shape (m,)) among n parties with threshold t.

    Returns:
        (n, m) uint64 array; row i is party i's share, the polynomial evaluated at x = i + 1.

    Raises:
        CryptoError: on bad n / threshold or a secret outside [0, p).
    """
    values = np.asarray(secrets)
    if values.dtype.kind not in "ui" or values.ndim != 1:
        raise CryptoError(f"Shamir secrets must be a 1-d integer array, got {values.dtype} {values.shape}")
    if values.size and (int(values.min()) < 0 or int(values.max()) >= PRIME):
        raise CryptoError("Shamir secrets must lie in [0, 2^61 - 1)")
    _check_params(n, threshold)
    coeffs = _random_field((threshold - 1, values.size), rng)
    xs = np.arange(1, n + 1, dtype=np.uint64)[:, None]
    # Horner from the top coefficient down; the constant term is the secret.
    acc = np.zeros((n, values.size), dtype=np.uint64)
    for c in coeffs[::-1]:
        acc = _addmod(_mulmod(acc, np.broadcast_to(xs, acc.shape)), np.broadcast_to(c, acc.shape))
    acc = _addmod(
        _mulmod(acc, np.broadcast_to(xs, acc.shape)), np.broadcast_to(values.astype(np.uint64), acc.shape)
    )
    return acc


def _sum_mod(terms: U64Array, axis: int) -> U64Array:
    """Sum elements in [0, p) along `axis` modulo p (fewer than 2^32 of them)."""
    lo: U64Array = np.asarray(np.sum(terms & _MASK32, axis=axis, dtype=np.uint64))  # < count * 2^32
    hi: U64Array = np.asarray(np.sum(terms >> np.uint64(32), axis=axis, dtype=np.uint64))  # < count * 2^29
    return _addmod(_reduce(lo), _mulmod(_reduce(hi), np.full_like(hi, 1 << 32)))


def _check_xs(xs: Sequence[int]) -> list[int]:
    points = [int(x) for x in xs]
    if len(set(points)) != len(points):
        raise CryptoError(
            f"duplicate Shamir x-coordinates: {sorted({x for x in points if points.count(x) > 1})}"
        )
    if any(not 1 <= x < PRIME for x in points):
        raise CryptoError("Shamir x-coordinates must lie in [1, p)")
    return points


def split_at(secrets: npt.ArrayLike, xs: Sequence[int], threshold: int, rng: Rng | None = None) -> U64Array:
    """Share the m field elements of `secrets` with threshold t, evaluated only at `xs`.

    The same sharing as `split` (one random polynomial of degree t - 1 per secret), for holders
    named by their x-coordinates: `split(s, n, t)` equals `split_at(s, range(1, n + 1), t)` in
    distribution.

    Returns:
        (len(xs), m) uint64 array; row r is the share at x = xs[r].

    Raises:
        CryptoError: on a bad threshold, duplicate x or x outside [1, p), or a secret outside [0, p).
    """
    values = np.asarray(secrets)
    if values.dtype.kind not in "ui" or values.ndim != 1:
        raise CryptoError(f"Shamir secrets must be a 1-d integer array, got {values.dtype} {values.shape}")
    if values.size and (int(values.min()) < 0 or int(values.max()) >= PRIME):
        raise CryptoError("Shamir secrets must lie in [0, 2^61 - 1)")
    points = _check_xs(xs)
    if threshold < 1:
        raise CryptoError(f"Shamir needs threshold >= 1, got {threshold}")
    coeffs = np.vstack([values.astype(np.uint64)[None, :], _random_field((threshold - 1, values.size), rng)])
    # x^j mod p for every holder and degree: (h, t) Python-int powers, t is small.
    powers = np.array([[pow(x, j, PRIME) for j in range(threshold)] for x in points], dtype=np.uint64)
    powers = powers.reshape(len(points), threshold)
    terms = _mulmod(
        np.broadcast_to(coeffs[None, :, :], (len(points), *coeffs.shape)),
        np.broadcast_to(powers[:, :, None], (len(points), *coeffs.shape)),
    )
    return _sum_mod(terms, axis=1)


def recover_many(xs: npt.ArrayLike, shares: npt.ArrayLike, threshold: int) -> U64Array:
    """Recover g independent sharings at once: group i's m secrets from its k shares.

    Args:
        xs: (g, k) x-coordinates; row i names the holders of group i's shares.
        shares: (g, k, m) array; shares[i, r] is the share at xs[i, r].
        threshold: the t used when sharing (k >= t; all k shares are used).

    Returns:
        (g, m) uint64 array of the secrets.

    Raises:
        CryptoError: on too few shares, duplicate x, shape mismatch or a share outside [0, p).
    """
    points = np.asarray(xs)
    rows = np.asarray(shares)
    if rows.ndim != 3 or rows.dtype.kind not in "ui":
        raise CryptoError(
            f"Shamir share groups must be a (g, k, m) integer array, got {rows.dtype} {rows.shape}"
        )
    if points.shape != rows.shape[:2]:
        raise CryptoError(f"x-coordinates of shape {points.shape} for share groups of shape {rows.shape}")
    if rows.shape[1] < threshold:
        raise CryptoError(f"Shamir recovery needs {threshold} shares, got {rows.shape[1]}")
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= PRIME):
        raise CryptoError("Shamir shares must lie in [0, 2^61 - 1)")
    lam = np.array([lagrange_at_zero(_check_xs(row.tolist())) for row in points], dtype=np.uint64)
    lam = lam.reshape(points.shape)
    terms = _mulmod(rows.astype(np.uint64), np.broadcast_to(lam[:, :, None], rows.shape))
    return _sum_mod(terms, axis=1)


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Lagrange coefficients lambda_i with f(0) = sum_i lambda_i f(x_i) over F_p.

    Raises:
        CryptoError: on duplicate x or x outside [1, p).
    """
    points = [int(x) for x in xs]
    if len(set(points)) != len(points):
        dup = sorted({x for x in points if points.count(x) > 1})
        raise CryptoError(f"duplicate Shamir x-coordinates: {dup}")
    if any(not 1 <= x < PRIME for x in points):
        raise CryptoError("Shamir x-coordinates must lie in [1, p)")
    coeffs = []
    for i, xi in enumerate(points):
        num, den = 1, 1
        for j, xj in enumerate(points):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        coeffs.append(num * pow(den, -1, PRIME) % PRIME)
    return coeffs


def recover(xs: Sequence[int], shares: npt.ArrayLike, threshold: int) -> U64Array:
    """Recover the m secrets from k >= threshold shares.

    Args:
        xs: the k x-coordinates (party index + 1) of the shares given.
        shares: (k, m) array; row r is the share at xs[r].
        threshold: the t used in `split`.

    Raises:
        CryptoError: on too few shares, duplicate x, shape mismatch or a share outside [0, p).
    """
    rows = np.asarray(shares)
    if rows.ndim != 2 or rows.dtype.kind not in "ui":
        raise CryptoError(f"Shamir shares must be a (k, m) integer array, got {rows.dtype} {rows.shape}")
    if len(xs) != rows.shape[0]:
        raise CryptoError(f"{len(xs)} x-coordinates for {rows.shape[0]} share rows")
    if len(xs) < threshold:
        raise CryptoError(f"Shamir recovery needs {threshold} shares, got {len(xs)}")
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= PRIME):
        raise CryptoError("Shamir shares must lie in [0, 2^61 - 1)")
    lam = lagrange_at_zero(xs)
    values = rows.astype(np.uint64)
    acc = np.zeros(rows.shape[1], dtype=np.uint64)
    for coeff, row in zip(lam, values, strict=True):
        acc = _addmod(acc, _mulmod(row, np.full_like(row, coeff)))
    return acc


def split_bytes(secret: bytes, n: int, threshold: int, rng: Rng | None = None) -> U64Array:
    """Share a byte string: element 0 is its length, then 7-byte little-endian chunks.

    Returns:
        (n, 1 + ceil(len / 7)) uint64 array of shares.
    """
    data = bytes(secret)
    padded = data + bytes(-len(data) % CHUNK_BYTES)
    chunks = np.frombuffer(padded, dtype=np.uint8).reshape(-1, CHUNK_BYTES)
    words = np.zeros((chunks.shape[0], 8), dtype=np.uint8)
    words[:, :CHUNK_BYTES] = chunks
    elements = np.concatenate([np.array([len(data)], dtype=np.uint64), words.view("<u8").reshape(-1)])
    return split(elements.astype(np.uint64), n, threshold, rng)


def recover_bytes(xs: Sequence[int], shares: npt.ArrayLike, threshold: int) -> bytes:
    """Recover a byte string shared with `split_bytes`.

    Raises:
        CryptoError: if the shares are inconsistent (bad length or chunk value).
    """
    elements = recover(xs, shares, threshold)
    length, body = int(elements[0]), elements[1:]
    if -(-length // CHUNK_BYTES) != body.size:
        raise CryptoError(f"recovered length {length} does not match {body.size} chunks")
    if np.any(body >> np.uint64(8 * CHUNK_BYTES)):
        raise CryptoError("recovered chunk exceeds 7 bytes: shares are inconsistent")
    raw = body.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :CHUNK_BYTES].tobytes()
    return raw[:length]
