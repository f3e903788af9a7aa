"""Shamir secret sharing over the Mersenne prime field F_p, p = 2^31 - 1 (Shamir 1979).

Used by secure aggregation (Bonawitz et al. 2017) to recover the seeds of dropped clients. Each
secret s is the constant term of a random polynomial of degree t - 1; party i (x = i + 1) holds
the value at x. Any t shares recover s by Lagrange interpolation at 0; fewer than t shares are
uniformly distributed and independent of s (perfect secrecy, in any prime field).

Why a 31-bit field: a product of two elements fits in 62 bits, so every field operation is one
native uint64 numpy product and one `%`, with no limb splitting. A client shares a few dozen
elements among a few dozen holders every round, so fixed per-call costs dominate: `split_at`
takes ~30 us for SecAgg+'s shape (19 elements, 17 holders, t = 9), against ~190 us for the
former p = 2^61 - 1 code, which needed 32-bit limbs for every product.

Vectorised: `split` / `split_at` evaluate all polynomials at all holders by Horner's rule, t - 1
numpy steps over an (holders, secrets) array; `recover` / `recover_many` reduce each Lagrange
term mod p before summing (sums of k < 2^33 reduced terms cannot wrap), and `recover_many` builds
the Lagrange coefficients of every group at once (products and one vectorised Fermat inversion).

`split_bytes` / `recover_bytes` share byte strings (e.g. 32-byte PRG seeds) as 3-byte field
chunks preceded by a length element.
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
    "bytes_to_elements",
    "elements_to_bytes",
    "lagrange_at_zero",
    "recover",
    "recover_bytes",
    "recover_many",
    "split",
    "split_at",
    "split_bytes",
]

PRIME = (1 << 31) - 1
CHUNK_BYTES = 3  # 24-bit chunks always lie below p
_P = np.uint64(PRIME)
_MAX_RESAMPLE = 64  # each draw is rejected with probability 2^-31; 64 rounds never all fail


def _random_field(shape: tuple[int, ...], rng: Rng | None) -> U64Array:
    """Uniform elements of F_p by rejection sampling 31-bit values."""
    out = random_u64(shape, rng) & _P
    for _ in range(_MAX_RESAMPLE):
        bad = out == _P
        if not bad.any():
            return out
        out[bad] = random_u64(int(bad.sum()), rng) & _P
    raise CryptoError("field sampling failed repeatedly: the random source is broken")


def _check_secrets(secrets: npt.ArrayLike) -> U64Array:
    values = np.asarray(secrets)
    if values.dtype.kind not in "ui" or values.ndim != 1:
        raise CryptoError(f"Shamir secrets must be a 1-d integer array, got {values.dtype} {values.shape}")
    if values.size and (int(values.min()) < 0 or int(values.max()) >= PRIME):
        raise CryptoError("Shamir secrets must lie in [0, 2^31 - 1)")
    return values.astype(np.uint64)


def _check_shares(rows: npt.NDArray[np.integer]) -> U64Array:
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= PRIME):
        raise CryptoError("Shamir shares must lie in [0, 2^31 - 1)")
    return rows.astype(np.uint64)


def _check_xs(xs: Sequence[int]) -> list[int]:
    points = [int(x) for x in xs]
    if len(set(points)) != len(points):
        raise CryptoError(
            f"duplicate Shamir x-coordinates: {sorted({x for x in points if points.count(x) > 1})}"
        )
    if any(not 1 <= x < PRIME for x in points):
        raise CryptoError("Shamir x-coordinates must lie in [1, p)")
    return points


def _evaluate(values: U64Array, xs: Sequence[int], threshold: int, rng: Rng | None) -> U64Array:
    """Values at `xs` of one random polynomial of degree t - 1 per secret (constant term = secret)."""
    if threshold < 1:
        raise CryptoError(f"Shamir needs threshold >= 1, got {threshold}")
    coeffs = _random_field((threshold - 1, values.size), rng)
    x = np.asarray(xs, dtype=np.uint64)[:, None]
    acc = np.zeros((x.shape[0], values.size), dtype=np.uint64)
    for c in coeffs[::-1]:  # Horner from the top coefficient down; each step stays below 2^63
        acc *= x
        acc += c
        acc %= _P
    acc *= x
    acc += values
    acc %= _P
    return acc


def split(secrets: npt.ArrayLike, n: int, threshold: int, rng: Rng | None = None) -> U64Array:
    """Share each field element of `secrets` (shape (m,)) among n parties with threshold t.

    Returns:
        (n, m) uint64 array; row i is party i's share, the polynomial evaluated at x = i + 1.

    Raises:
        CryptoError: on bad n / threshold or a secret outside [0, p).
    """
    values = _check_secrets(secrets)
    if not 1 <= threshold <= n:
        raise CryptoError(f"Shamir needs 1 <= threshold <= n, got threshold={threshold}, n={n}")
    if n >= PRIME:
        raise CryptoError(f"Shamir supports fewer than {PRIME} parties, got {n}")
    return _evaluate(values, range(1, n + 1), threshold, rng)


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
    values = _check_secrets(secrets)
    return _evaluate(values, _check_xs(xs), threshold, rng)


def _powmod(base: U64Array, exponent: int) -> U64Array:
    """base^exponent mod p elementwise (square and multiply over the exponent's bits)."""
    result = np.ones_like(base)
    square = base.copy()
    while exponent:
        if exponent & 1:
            result = result * square % _P
        square = square * square % _P
        exponent >>= 1
    return result


def _lagrange_rows(points: npt.NDArray[np.integer]) -> U64Array:
    """Lagrange coefficients at 0 for each row of x-coordinates (g, k), all rows at once.

    lambda_i = prod_{j != i} x_j / (x_j - x_i): the numerators and denominators are k - 1 step
    products over (g, k) arrays, inverted together by Fermat (x^(p-2)).
    """
    x = points.astype(np.uint64) % _P
    g, k = x.shape
    num: U64Array = np.ones((g, k), dtype=np.uint64)
    den: U64Array = np.ones((g, k), dtype=np.uint64)
    for shift in range(1, k):
        other: U64Array = np.roll(x, -shift, axis=1)  # x_j for j = i + shift (mod k): every j != i once
        num = num * other % _P
        gap = np.asarray((other + _P - x) % _P, dtype=np.uint64)  # x_j - x_i mod p
        den = den * gap % _P
    return num * _powmod(den, PRIME - 2) % _P


def _check_groups(points: npt.NDArray[np.integer]) -> None:
    if points.size and (int(points.min()) < 1 or int(points.max()) >= PRIME):
        raise CryptoError("Shamir x-coordinates must lie in [1, p)")
    ordered = np.sort(points, axis=1)
    dup = ordered[:, 1:] == ordered[:, :-1]
    if dup.any():
        row = int(np.argmax(dup.any(axis=1)))
        _check_xs(points[row].tolist())  # raises, naming the duplicates


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
    if points.shape != rows.shape[:2] or points.dtype.kind not in "ui":
        raise CryptoError(f"x-coordinates of shape {points.shape} for share groups of shape {rows.shape}")
    if rows.shape[1] < threshold:
        raise CryptoError(f"Shamir recovery needs {threshold} shares, got {rows.shape[1]}")
    values = _check_shares(rows)
    _check_groups(points)
    lam = _lagrange_rows(points)
    terms = values * lam[:, :, None] % _P  # each term reduced: k of them sum below 2^63
    total: U64Array = np.asarray(np.sum(terms, axis=1, dtype=np.uint64) % _P)
    return total


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Lagrange coefficients lambda_i with f(0) = sum_i lambda_i f(x_i) over F_p.

    Raises:
        CryptoError: on duplicate x or x outside [1, p).
    """
    points = _check_xs(xs)
    return [int(v) for v in _lagrange_rows(np.array([points], dtype=np.uint64))[0]] if points else []


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
    lam = np.array(lagrange_at_zero(xs), dtype=np.uint64)
    values = _check_shares(rows)
    total: U64Array = np.asarray(np.sum(values * lam[:, None] % _P, axis=0, dtype=np.uint64) % _P)
    return total


def bytes_to_elements(secret: bytes) -> U64Array:
    """A byte string as field elements: its length, then little-endian 3-byte chunks."""
    data = bytes(secret)
    padded = data + bytes(-len(data) % CHUNK_BYTES)
    words = np.zeros((len(padded) // CHUNK_BYTES, 4), dtype=np.uint8)
    words[:, :CHUNK_BYTES] = np.frombuffer(padded, dtype=np.uint8).reshape(-1, CHUNK_BYTES)
    return np.concatenate([np.array([len(data)], dtype=np.uint64), words.view("<u4").reshape(-1)])


def elements_to_bytes(elements: U64Array) -> bytes:
    """Inverse of `bytes_to_elements`.

    Raises:
        CryptoError: if the elements are not such an encoding (bad length or chunk value), which is
            what inconsistent shares recover to.
    """
    length, body = int(elements[0]), elements[1:]
    if -(-length // CHUNK_BYTES) != body.size:
        raise CryptoError(f"recovered length {length} does not match {body.size} chunks")
    if np.any(body >> np.uint64(8 * CHUNK_BYTES)):
        raise CryptoError(f"recovered chunk exceeds {CHUNK_BYTES} bytes: shares are inconsistent")
    raw = body.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :CHUNK_BYTES].tobytes()
    return raw[:length]


def split_bytes(secret: bytes, n: int, threshold: int, rng: Rng | None = None) -> U64Array:
    """Share a byte string: element 0 is its length, then 3-byte little-endian chunks.

    Returns:
        (n, 1 + ceil(len / 3)) uint64 array of shares.
    """
    return split(bytes_to_elements(secret), n, threshold, rng)


def recover_bytes(xs: Sequence[int], shares: npt.ArrayLike, threshold: int) -> bytes:
    """Recover a byte string shared with `split_bytes`.

    Raises:
        CryptoError: if the shares are inconsistent (bad length or chunk value).
    """
    return elements_to_bytes(recover(xs, shares, threshold))
