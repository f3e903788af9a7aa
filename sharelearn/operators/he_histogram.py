"""Encrypted gradient histograms for SecureBoost: packed (g, h), bin sums, subtraction, compression.

The label holder packs each row's fixed-point gradient and hessian into one plaintext,
``g_int + h_int * 2^S`` (balanced: g may be negative, no bias, so sums and differences of packed
plaintexts stay valid packed plaintexts while every slot sum stays below 2^(S-1) in magnitude).
A feature holder multiplies the ciphertexts of the rows in each (feature, bin) into one ciphertext
(a segmented product tree, one modular multiplication per row and feature), derives a sibling node
as parent - child (histogram subtraction, Li et al. "LightGBM"), then compresses `pairs` bins into
one ciphertext by Horner's rule, ``X = sum_j (G_j + H_j 2^S) 2^(2 S j)``, and re-randomises it
before it goes back (SecureBoost+; Chen et al. 2021). The key owner decrypts one big integer per
`pairs` bins and splits it into balanced S-bit digits.

Leaks to the key owner: the per-bin sums of g and h of each feature of the node (what SecureBoost
reveals by design), not the rows in a bin: compressed ciphertexts are re-randomised, so they cannot
be matched against products of the row ciphertexts the key owner sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import gmpy2
import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.executor import Executor
from sharelearn.crypto import he, modexp
from sharelearn.crypto.he import EncArray, ObjArray

__all__ = [
    "DEFAULT_FRAC_BITS",
    "GHPacking",
    "bin_products",
    "compress",
    "decompress",
    "encode_rows",
    "make_packing",
    "subtract",
]

# 2^-24 relative to the largest |g| (h): the resolution of XGBoost's float32 gradients.
DEFAULT_FRAC_BITS = 24
_ONE = gmpy2.mpz(1)


@dataclass(frozen=True, slots=True)
class GHPacking:
    """Layout of packed (g, h) plaintexts.

    Attributes:
        frac_bits: g and h (scaled into [-1, 1]) are round(x * 2^frac_bits).
        slot_bits: S; a sum over all rows stays below 2^(S-1) in magnitude.
        pairs: (G, H) bin pairs per compressed ciphertext (2 * pairs * S bits below max_int).
    """

    frac_bits: int
    slot_bits: int
    pairs: int

    def to_wire(self) -> list[int]:
        return [self.frac_bits, self.slot_bits, self.pairs]


def make_packing(n_rows: int, max_int: int, *, frac_bits: int = DEFAULT_FRAC_BITS) -> GHPacking:
    """The layout for sums over up to `n_rows` rows under a key with plaintexts up to `max_int`.

    Raises:
        ConfigError: the key is too small to hold even one (G, H) pair.
    """
    if not 8 <= frac_bits <= 52:
        raise ConfigError(f"he_histogram.frac_bits must be in 8..52, got {frac_bits}")
    slot_bits = frac_bits + max(1, n_rows).bit_length() + 1
    pairs = (max_int.bit_length() - 1) // (2 * slot_bits)
    if pairs < 1:
        raise ConfigError(
            f"a {max_int.bit_length()}-bit plaintext cannot hold one (g, h) pair of {slot_bits}-bit slots"
        )
    return GHPacking(frac_bits, slot_bits, pairs)


def encode_rows(
    g: npt.NDArray[np.float64], h: npt.NDArray[np.float64], spec: GHPacking
) -> tuple[ObjArray, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Fixed-point g and h (each within [-1, 1]) and their packed plaintexts g_int + h_int * 2^S.

    Returns (packed ints, g_int, h_int); the key owner uses g_int / h_int for its own histograms, so
    its sums match the decrypted ones exactly.
    """
    if np.any(np.abs(g) > 1.0) or np.any(np.abs(h) > 1.0):
        raise CryptoError("encode_rows expects g and h scaled into [-1, 1]")
    scale = float(1 << spec.frac_bits)
    g_int = np.rint(g * scale).astype(np.int64)
    h_int = np.rint(h * scale).astype(np.int64)
    packed = g_int.astype(object) + (h_int.astype(object) << spec.slot_bits)
    return packed, g_int, h_int


def _segment_products(values: ObjArray, keys: npt.NDArray[np.int64], size: int, mod: object) -> ObjArray:
    """prod of values per key (0..size-1) mod `mod`: sort by key, then pairwise products within runs."""
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    while k.size:
        same_next = np.r_[k[1:] == k[:-1], False]
        if not same_next.any():
            break
        starts = np.r_[True, ~same_next[:-1]]
        start_pos = np.flatnonzero(starts)
        rank = np.arange(k.size) - start_pos[np.cumsum(starts) - 1]
        keep = rank % 2 == 0
        pair = keep & same_next
        out = v[keep]
        at = np.flatnonzero(pair)
        slots = (np.cumsum(keep) - 1)[at]
        out[slots] = (v[at] * v[at + 1]) % mod
        k, v = k[keep], out
    result = np.full(size, _ONE, dtype=object)
    result[k] = v
    return result


def bin_products(
    ct: ObjArray, bins: npt.NDArray[np.int32], rows: npt.NDArray[np.int64], n_bins: int, mod: object
) -> ObjArray:
    """Encrypted per-(feature, bin) sums of the rows `rows`: shape (F * n_bins,), feature-major."""
    n_features = bins.shape[1]
    keys = (bins[rows].astype(np.int64) + np.arange(n_features, dtype=np.int64) * n_bins).ravel()
    values = np.repeat(ct[rows], n_features)
    return _segment_products(values, keys, n_features * n_bins, mod)


def subtract(parent: ObjArray, child: ObjArray, mod: object) -> ObjArray:
    """The sibling's histogram parent - child (one batched inversion)."""
    inv = modexp.batch_invert(child.tolist(), mod)
    return np.asarray((parent * np.fromiter(inv, dtype=object, count=len(inv))) % mod, dtype=object)


def compress(
    hists: ObjArray, spec: GHPacking, pk: he.HEPublicKey, *, executor: Executor | None = None
) -> EncArray:
    """Pack `spec.pairs` bins per ciphertext (Horner's rule) and re-randomise: (nodes, groups).

    The exponentiations and the re-randomisation run on `executor` (None: the calling thread).
    """
    nodes, entries = hists.shape
    groups = -(-entries // spec.pairs)
    padded = np.full((nodes, groups * spec.pairs), _ONE, dtype=object)
    padded[:, :entries] = hists
    cols = padded.reshape(nodes * groups, spec.pairs)
    mod = pk.cipher_modulus
    shift = 1 << (2 * spec.slot_bits)
    acc = cols[:, -1].tolist()
    for j in range(spec.pairs - 2, -1, -1):
        raised = modexp.powmod(acc, shift, mod, executor=executor)
        acc = [a * b % mod for a, b in zip(raised, cols[:, j].tolist(), strict=True)]
    out = np.fromiter(acc, dtype=object, count=len(acc)).reshape(nodes, groups)
    return EncArray(pk, out).rerandomize(executor=executor)


def decompress(
    sk: he.HEPrivateKey, enc: EncArray, spec: GHPacking, entries: int, *, executor: Executor | None = None
) -> npt.NDArray[np.int64]:
    """Decrypt `compress` output into integer (G, H) sums: shape (nodes, entries, 2).

    Raises:
        CryptoError: an overflow (a slot sum beyond the layout) or ciphertexts under another key.
    """
    nodes, groups = enc.shape
    if groups * spec.pairs < entries:
        raise CryptoError(f"{groups} compressed ciphertexts cannot hold {entries} bins")
    plain = np.asarray(he.decrypt(sk, enc, executor=executor), dtype=object).ravel()
    half, mask = 1 << (spec.slot_bits - 1), (1 << spec.slot_bits) - 1
    digits = np.empty((plain.size, 2 * spec.pairs), dtype=np.int64)
    rest = plain
    for s in range(2 * spec.pairs):
        d = ((rest + half) & mask) - half
        digits[:, s] = d.astype(np.int64)
        rest = (rest - d) >> spec.slot_bits
    if np.any(rest != 0):
        raise CryptoError("a compressed histogram decodes beyond its slots (overflow or wrong key)")
    return digits.reshape(nodes, groups * spec.pairs, 2)[:, :entries, :]
