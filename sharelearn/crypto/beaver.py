"""Beaver multiplication triples over Z_2^64 (Beaver 1991; SecureML §2.3 and §4.2 for matrices).

A triple is a sharing of random a, b and c = a * b (elementwise), a matrix triple one of random
A (m, k), B (k, n) and C = A @ B. To multiply shared x and y the parties open e = x - a and
f = y - b (the operators layer does that over the network), then each party computes locally

    z_i = c_i + e * b_i + a_i * f   (+ e * f for party 0 only),

and sum_i z_i = c + e b + a f + e f = (a + e)(b + f) = x y. The matrix version replaces * by @
in the right order: Z_i = C_i + E @ B_i + A_i @ F (+ E @ F for party 0).

`dealer_triples` and `dealer_matrix_triples` play the trusted dealer: it learns everything and
must not collude with any party. numpy's integer matmul multiplies and adds with native uint64
wrap-around, so A @ B is exact mod 2^64 (it does not go through floating-point BLAS); the tests
check this against Python integers.

Leaks: e and f are uniform because a and b are, so opening them reveals nothing about x, y.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U64Array
from sharelearn.crypto import additive
from sharelearn.crypto.rng import Rng, random_u64

__all__ = [
    "MatrixTriple",
    "Triple",
    "TripleSource",
    "beaver_local_matmul",
    "beaver_local_mul",
    "beaver_masks",
    "dealer_matrix_triples",
    "dealer_triples",
]


def _check_u64_parts(triple: object, kind: str, *, ndim: int | None) -> None:
    """Check that fields a, b, c of a triple are uint64 arrays (of `ndim` dimensions when given)."""
    for name in ("a", "b", "c"):
        arr = getattr(triple, name)
        if (
            not isinstance(arr, np.ndarray)
            or arr.dtype != np.uint64
            or (ndim is not None and arr.ndim != ndim)
        ):
            dims = "" if ndim is None else f"{ndim}-d "
            raise CryptoError(f"{kind}.{name} must be a {dims}uint64 array")


@dataclass(frozen=True, slots=True)
class Triple:
    """One party's shares of an elementwise triple c = a * b (all the same shape)."""

    a: U64Array
    b: U64Array
    c: U64Array

    def __post_init__(self) -> None:
        _check_u64_parts(self, "Triple", ndim=None)
        if not self.a.shape == self.b.shape == self.c.shape:
            raise CryptoError(f"Triple shapes differ: a {self.a.shape}, b {self.b.shape}, c {self.c.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the values the triple multiplies."""
        return tuple(self.a.shape)

    def __repr__(self) -> str:  # shares must never reach logs
        return f"Triple(shape={self.shape})"


@dataclass(frozen=True, slots=True)
class MatrixTriple:
    """One party's shares of a matrix triple C = A @ B with A (m, k), B (k, n), C (m, n)."""

    a: U64Array
    b: U64Array
    c: U64Array

    def __post_init__(self) -> None:
        _check_u64_parts(self, "MatrixTriple", ndim=2)
        (m, k), (k2, n), (m2, n2) = self.a.shape, self.b.shape, self.c.shape
        if k != k2 or m != m2 or n != n2:
            raise CryptoError(
                f"MatrixTriple shapes do not chain: A {self.a.shape}, B {self.b.shape}, C {self.c.shape}"
            )

    @property
    def dims(self) -> tuple[int, int, int]:
        """(m, k, n)."""
        return int(self.a.shape[0]), int(self.a.shape[1]), int(self.b.shape[1])

    def __repr__(self) -> str:
        return f"MatrixTriple(m={self.dims[0]}, k={self.dims[1]}, n={self.dims[2]})"


class TripleSource(Protocol):
    """Where a party gets its triple shares from (a dealer, HE/OT generation, a precomputed store).

    Each call returns this party's share of a fresh triple; the parties' sources must be
    correlated so that their i-th calls return shares of the same triple.
    """

    def triple(self, shape: tuple[int, ...]) -> Triple:
        """Return this party's share of a fresh elementwise triple of `shape`."""
        ...

    def matrix_triple(self, m: int, k: int, n: int) -> MatrixTriple:
        """Return this party's share of a fresh (m, k) x (k, n) matrix triple."""
        ...


def _check_parties(n_parties: int) -> None:
    if isinstance(n_parties, bool) or not isinstance(n_parties, int) or n_parties < 2:
        raise CryptoError(f"triples need n_parties >= 2, got {n_parties!r}")


def dealer_triples(shape: int | tuple[int, ...], n_parties: int = 2, rng: Rng | None = None) -> list[Triple]:
    """Deal elementwise triples as a trusted dealer; element i of the list goes to party i."""
    _check_parties(n_parties)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    a, b = random_u64(dims, rng), random_u64(dims, rng)
    c: U64Array = a * b
    parts = [additive.share(v, n_parties, rng) for v in (a, b, c)]
    return [Triple(parts[0][i], parts[1][i], parts[2][i]) for i in range(n_parties)]


def dealer_matrix_triples(
    m: int, k: int, n: int, n_parties: int = 2, rng: Rng | None = None
) -> list[MatrixTriple]:
    """Deal matrix triples A (m, k), B (k, n), C = A @ B mod 2^64 as a trusted dealer."""
    _check_parties(n_parties)
    if min(m, k, n) < 1:
        raise CryptoError(f"matrix triple dimensions must be positive, got m={m}, k={k}, n={n}")
    a, b = random_u64((m, k), rng), random_u64((k, n), rng)
    c = np.matmul(a, b)
    parts = [additive.share(v, n_parties, rng) for v in (a, b, c)]
    return [MatrixTriple(parts[0][i], parts[1][i], parts[2][i]) for i in range(n_parties)]


def beaver_masks(
    x_sh: npt.ArrayLike, y_sh: npt.ArrayLike, triple: Triple | MatrixTriple
) -> tuple[U64Array, U64Array]:
    """Return this party's shares of e = x - a and f = y - b, which the parties then open."""
    e_sh = additive.sub(x_sh, triple.a)
    f_sh = additive.sub(y_sh, triple.b)
    return e_sh, f_sh


def _check_party(party_index: int) -> None:
    if isinstance(party_index, bool) or not isinstance(party_index, int) or party_index < 0:
        raise CryptoError(f"party_index must be a non-negative int, got {party_index!r}")


def beaver_local_mul(party_index: int, e: npt.ArrayLike, f: npt.ArrayLike, triple: Triple) -> U64Array:
    """Return this party's share of x * y from the opened e, f (step 2 of Beaver's protocol).

    Args:
        party_index: 0 for the party that adds the public term e * f, else any other index.
        e: the opened x - a (uint64, the triple's shape).
        f: the opened y - b.
        triple: this party's share of the triple used to mask x and y.
    """
    _check_party(party_index)
    e_arr, f_arr = np.asarray(e), np.asarray(f)
    if e_arr.dtype != np.uint64 or f_arr.dtype != np.uint64:
        raise CryptoError(f"opened e, f must be uint64, got {e_arr.dtype}, {f_arr.dtype}")
    if e_arr.shape != triple.shape or f_arr.shape != triple.shape:
        raise CryptoError(f"opened e {e_arr.shape} / f {f_arr.shape} do not match the triple {triple.shape}")
    z: U64Array = triple.c + e_arr * triple.b + triple.a * f_arr
    if party_index == 0:
        z += e_arr * f_arr
    return z


def beaver_local_matmul(
    party_index: int, e: npt.ArrayLike, f: npt.ArrayLike, triple: MatrixTriple
) -> U64Array:
    """Return this party's share of X @ Y from the opened E = X - A (m, k) and F = Y - B (k, n)."""
    _check_party(party_index)
    e_arr, f_arr = np.asarray(e), np.asarray(f)
    if e_arr.dtype != np.uint64 or f_arr.dtype != np.uint64:
        raise CryptoError(f"opened E, F must be uint64, got {e_arr.dtype}, {f_arr.dtype}")
    if e_arr.shape != triple.a.shape or f_arr.shape != triple.b.shape:
        raise CryptoError(
            f"opened E {e_arr.shape} / F {f_arr.shape} do not match A {triple.a.shape} / B {triple.b.shape}"
        )
    z: U64Array = triple.c + np.matmul(e_arr, triple.b) + np.matmul(triple.a, f_arr)
    if party_index == 0:
        z += np.matmul(e_arr, f_arr)
    return z
