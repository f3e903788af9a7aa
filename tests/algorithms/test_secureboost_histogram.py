from __future__ import annotations

import numpy as np
import pytest

from sharelearn.algorithms.vertical.tree_kernels import histogram
from sharelearn.core.errors import CryptoError
from sharelearn.crypto import he
from sharelearn.operators import he_histogram as hh


@pytest.mark.parametrize("scheme", ["ou", "paillier"])
def test_encrypted_histograms_match_plaintext_with_subtraction_and_compression(scheme: str) -> None:
    rng = np.random.default_rng(5)
    n, n_features, n_bins = 300, 3, 8
    g = rng.uniform(-1, 1, n)
    h = rng.uniform(0, 1, n)
    bins = rng.integers(0, n_bins, size=(n, n_features)).astype(np.int32)
    pk, sk = he.keygen(scheme, 1024)
    spec = hh.make_packing(n, pk.max_int)
    packed, g_int, h_int = hh.encode_rows(g, h, spec)
    ct = he.encrypt(pk, packed).ct
    rows = np.arange(n)
    child = rows[rng.random(n) < 0.3]
    sibling = np.setdiff1d(rows, child)

    parent_hist = hh.bin_products(ct, bins, rows, n_bins, pk.cipher_modulus)
    child_hist = hh.bin_products(ct, bins, child, n_bins, pk.cipher_modulus)
    sibling_hist = hh.subtract(parent_hist, child_hist, pk.cipher_modulus)
    enc = hh.compress(np.stack([parent_hist, child_hist, sibling_hist]), spec, pk)
    sums = hh.decompress(sk, enc, spec, n_features * n_bins)

    assert enc.shape[1] == -(-(n_features * n_bins) // spec.pairs)
    for k, part in enumerate([rows, child, sibling]):
        want = histogram(bins, g_int.astype(float), h_int.astype(float), part, n_bins).reshape(-1, 2)
        np.testing.assert_array_equal(sums[k], want.astype(np.int64))


def test_packing_rejects_unscaled_gradients() -> None:
    spec = hh.make_packing(10, (1 << 600) // 3)

    with pytest.raises(CryptoError, match="scaled"):
        hh.encode_rows(np.array([2.0]), np.array([0.5]), spec)
