from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import additive, beaver
from sharelearn.crypto.rng import random_u64


def _py_matmul(a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    al, bl = a.tolist(), b.tolist()
    return [
        [sum(al[i][t] * bl[t][j] for t in range(len(bl))) % 2**64 for j in range(len(bl[0]))]
        for i in range(len(al))
    ]


def test_numpy_uint64_matmul_is_exact_mod_2_64() -> None:
    a, b = random_u64((7, 13)), random_u64((13, 5))

    assert np.matmul(a, b).tolist() == _py_matmul(a, b)


def test_numpy_uint64_multiply_wraps() -> None:
    a, b = random_u64(1000), random_u64(1000)

    assert (a * b).tolist() == [x * y % 2**64 for x, y in zip(a.tolist(), b.tolist(), strict=True)]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(2, 4))
def test_dealer_triples_are_consistent(size: int, n: int) -> None:
    triples = beaver.dealer_triples(size, n)

    a = additive.reconstruct([t.a for t in triples])
    b = additive.reconstruct([t.b for t in triples])
    assert np.array_equal(additive.reconstruct([t.c for t in triples]), a * b)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40))
def test_beaver_product_is_exact(size: int) -> None:
    x, y = random_u64(size), random_u64(size)
    x_sh, y_sh = additive.share(x), additive.share(y)
    triples = beaver.dealer_triples(size)

    masks = [beaver.beaver_masks(xs, ys, t) for xs, ys, t in zip(x_sh, y_sh, triples, strict=True)]
    e = additive.reconstruct([m[0] for m in masks])
    f = additive.reconstruct([m[1] for m in masks])
    z = [beaver.beaver_local_mul(i, e, f, t) for i, t in enumerate(triples)]

    assert np.array_equal(additive.reconstruct(z), x * y)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6))
def test_beaver_matrix_product_is_exact(m: int, k: int, n: int) -> None:
    x, y = random_u64((m, k)), random_u64((k, n))
    x_sh, y_sh = additive.share(x), additive.share(y)
    triples = beaver.dealer_matrix_triples(m, k, n)

    masks = [beaver.beaver_masks(xs, ys, t) for xs, ys, t in zip(x_sh, y_sh, triples, strict=True)]
    e = additive.reconstruct([mk[0] for mk in masks])
    f = additive.reconstruct([mk[1] for mk in masks])
    z = [beaver.beaver_local_matmul(i, e, f, t) for i, t in enumerate(triples)]

    assert additive.reconstruct(z).tolist() == _py_matmul(x, y)


def test_triple_repr_hides_values_and_shapes_are_checked() -> None:
    t = beaver.dealer_triples((2, 3))[0]

    assert repr(t) == "Triple(shape=(2, 3))"
    with pytest.raises(CryptoError, match="shapes"):
        beaver.Triple(t.a, t.b, random_u64(4))
    with pytest.raises(CryptoError, match="do not match"):
        beaver.beaver_local_mul(0, random_u64(4), random_u64(4), t)


def test_matrix_triple_rejects_non_chaining_shapes() -> None:
    with pytest.raises(CryptoError, match="chain"):
        beaver.MatrixTriple(random_u64((2, 3)), random_u64((4, 5)), random_u64((2, 5)))
