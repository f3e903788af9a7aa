"""Oblivious transfer: Chou–Orlandi base OT and IKNP extension, as pure steps (no Link).

Semi-honest security throughout. The operators layer moves the messages; here each step is a
function from the previous messages to the next ones.

**Base OT** (Chou & Orlandi 2015, "The Simplest Protocol for OT", in the prime-order group of
`ecgroup`). For k transfers of random 16-byte keys:

1. sender: `base_sender_setup` -> sends S = yG.
2. receiver (choices c_i): `base_receiver_choose` -> sends R_i = c_i S + x_i G;
   `base_receiver_keys` gives k_i = H(S, R_i, i, x_i S).
3. sender: `base_sender_keys` gives k_i^0 = H(S, R_i, i, y R_i), k_i^1 = H(S, R_i, i, y (R_i - S)).

The receiver learns k_i^{c_i} only; the sender learns nothing about c (R_i is uniform).

**IKNP extension** (Ishai, Kilian, Nissim, Petrank 2003), kappa = 128: the OT receiver (choice
bits r, m of them) plays base-OT *sender* and gets seed pairs (k_i^0, k_i^1); the OT sender picks
s in {0,1}^128 and plays base-OT *receiver*, getting k_i^{s_i}.

4. receiver: `iknp_receiver_extend` -> t^i = G(k_i^0), sends u^i = t^i xor G(k_i^1) xor r
   (128 x m bits, m/8 * 128 bytes); keeps the rows t_j of the transposed matrix.
5. sender: `iknp_sender_extend` -> q^i = G(k_i^{s_i}) xor s_i u^i; rows q_j = t_j xor r_j s.
6. sender: `ot_sender_encrypt` sends y_j^b = x_j^b xor H(j, q_j xor b s);
   receiver: `ot_receiver_decrypt` takes x_j^{r_j} = y_j^{r_j} xor H(j, t_j).
   Correlated OT (`cot_sender` / `cot_receiver`, one 16-byte message per transfer) gives the
   receiver W_j xor r_j Delta for garbled-circuit input labels; random OT (`rot_*`) sends nothing.

H is the tweakable correlation-robust hash `prg.tccr` (fixed-key AES, Guo et al. 2020) with tweak
(batch, j). One set of base OTs may serve many extensions if each uses a distinct `batch` id
(it selects the PRG stream and the hash tweaks); reusing a batch id breaks security.

Leaks: the sender sees u^i and knows only G(k_i^{s_i}); for s_i = 0 that hides r behind the
pseudorandom G(k_i^1), for s_i = 1 behind G(k_i^0), so r stays hidden. The receiver sees
y_j^{1-r_j} masked by H(j, t_j xor s) with s unknown to it, so x_j^{1-r_j} stays hidden.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U8Array, U64Array
from sharelearn.crypto import ecgroup, prg
from sharelearn.crypto.rng import Rng, random_bits

__all__ = [
    "KAPPA",
    "KEY_BYTES",
    "BaseReceiverState",
    "BaseSenderState",
    "base_receiver_choose",
    "base_receiver_keys",
    "base_sender_keys",
    "base_sender_setup",
    "bit_transpose",
    "cot_receiver",
    "cot_sender",
    "iknp_receiver_extend",
    "iknp_sender_choose",
    "iknp_sender_extend",
    "ot_receiver_decrypt",
    "ot_sender_encrypt",
    "rot_receiver",
    "rot_sender",
]

KAPPA = 128  # computational security parameter: number of base OTs and bits per extended row
KEY_BYTES = 16
_DELTA_SWAPS = (
    (np.uint64(7), np.uint64(0x00AA00AA00AA00AA)),
    (np.uint64(14), np.uint64(0x0000CCCC0000CCCC)),
    (np.uint64(28), np.uint64(0x00000000F0F0F0F0)),
)


# ---------------------------------------------------------------------------- base OT (Chou–Orlandi)


@dataclass(frozen=True, slots=True)
class BaseSenderState:
    """The base-OT sender's secret y and its public S = yG, T = yS."""

    y: bytes
    big_s: bytes
    big_t: bytes

    def __repr__(self) -> str:
        return "BaseSenderState(<secret>)"


@dataclass(frozen=True, slots=True)
class BaseReceiverState:
    """The base-OT receiver's choices and the keys k_i^{c_i} it obtained."""

    choices: U8Array
    keys: U8Array

    def __repr__(self) -> str:
        return f"BaseReceiverState(k={self.choices.size})"


def _base_key(big_s: bytes, big_r: bytes, index: int, point: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=KEY_BYTES, person=b"sl-co-ot-v1")
    h.update(big_s + big_r + index.to_bytes(8, "little") + point)
    return h.digest()


def base_sender_setup(rng: Rng | None = None) -> tuple[BaseSenderState, bytes]:
    """Step 1: draw y; return the state and the message S = yG for the receiver."""
    y = ecgroup.random_scalar(rng)
    big_s = ecgroup.base_mult(y)
    return BaseSenderState(y, big_s, ecgroup.scalar_mult(y, big_s)), big_s


def base_receiver_choose(
    big_s: bytes, choices: npt.ArrayLike, rng: Rng | None = None
) -> tuple[BaseReceiverState, U8Array]:
    """Step 2: for each choice bit c_i return R_i = c_i S + x_i G as a (k, 32) message.

    Raises:
        CryptoError: if S is not a valid group element or a choice is not a bit.
    """
    bits = _bits(choices, "base OT choices")
    if not ecgroup.is_valid_point(big_s):
        raise CryptoError("base OT: the sender's S is not a valid group element")
    msgs, keys = [], []
    for i, c in enumerate(bits):
        x = ecgroup.random_scalar(rng)
        big_r = ecgroup.base_mult(x)
        if c:
            big_r = ecgroup.point_add(big_s, big_r)
        msgs.append(big_r)
        keys.append(_base_key(big_s, big_r, i, ecgroup.scalar_mult(x, big_s, what="S")))
    return BaseReceiverState(bits, _rows(keys, KEY_BYTES)), _rows(msgs, ecgroup.POINT_BYTES)


def base_receiver_keys(state: BaseReceiverState) -> U8Array:
    """The receiver's output: k_i^{c_i} as (k, 16) uint8."""
    return state.keys


def base_sender_keys(state: BaseSenderState, msgs: U8Array) -> tuple[U8Array, U8Array]:
    """Step 3: from the receiver's R_i (k, 32) derive both keys (k_i^0, k_i^1), each (k, 16).

    Raises:
        CryptoError: if any R_i is not a valid group element.
    """
    if msgs.dtype != np.uint8 or msgs.ndim != 2 or msgs.shape[1] != ecgroup.POINT_BYTES:
        raise CryptoError(f"base OT: receiver message must be uint8 (k, 32), got {msgs.dtype} {msgs.shape}")
    keys0, keys1 = [], []
    for i, row in enumerate(msgs):
        big_r = row.tobytes()
        y_r = ecgroup.scalar_mult(state.y, big_r, what=f"R[{i}]")
        keys0.append(_base_key(state.big_s, big_r, i, y_r))
        # y (R - S) = yR - T; if R = S then yR = T and the difference is the identity, which only a
        # cheating receiver could cause; the point_sub check rejects it.
        keys1.append(_base_key(state.big_s, big_r, i, ecgroup.point_sub(y_r, state.big_t)))
    return _rows(keys0, KEY_BYTES), _rows(keys1, KEY_BYTES)


# ---------------------------------------------------------------------------- IKNP extension


def iknp_sender_choose(rng: Rng | None = None) -> U8Array:
    """Draw the IKNP sender's secret s in {0,1}^128 (its base-OT choice bits)."""
    return random_bits(KAPPA, rng)


def bit_transpose(rows: U8Array, n_cols: int) -> U8Array:
    """Transpose a (128, ceil(n_cols/8)) bit matrix (little bit order) into (n_cols, 16) bytes.

    Bit i of output row j (little bit order) is bit j of input row i. Each 8x8 bit block is one
    uint64 transposed with three delta swaps (Hacker's Delight §7-3), all blocks at once.
    """
    n_bytes = -(-n_cols // 8)
    if rows.dtype != np.uint8 or rows.shape != (KAPPA, n_bytes):
        raise CryptoError(f"bit_transpose needs uint8 ({KAPPA}, {n_bytes}), got {rows.dtype} {rows.shape}")
    groups = KAPPA // 8
    # blocks[g, c] packs bytes rows[8g + k, c] for k = 0..7: byte k of the word is row k.
    blocks = np.ascontiguousarray(rows.reshape(groups, 8, n_bytes).transpose(0, 2, 1)).view(np.uint64)
    x = blocks[..., 0]  # a contiguous view of the fresh copy above: swapped in place
    t = np.empty_like(x)
    for shift, mask in _DELTA_SWAPS:  # t = (x ^ (x >> shift)) & mask; x ^= t ^ (t << shift)
        np.right_shift(x, shift, out=t)
        t ^= x
        t &= mask
        x ^= t
        t <<= shift
        x ^= t
    # Now byte j of blocks[g, c] holds column 8c + j of rows 8g..8g+7, i.e. byte g of output row 8c + j.
    out = x.view(np.uint8).reshape(groups, n_bytes, 8).transpose(1, 2, 0)
    return np.ascontiguousarray(out).reshape(n_bytes * 8, groups)[:n_cols]


def _check_seeds(seeds: U8Array, what: str) -> None:
    if seeds.dtype != np.uint8 or seeds.shape != (KAPPA, KEY_BYTES):
        raise CryptoError(
            f"IKNP {what} must be uint8 ({KAPPA}, {KEY_BYTES}), got {seeds.dtype} {seeds.shape}"
        )


def _prg_rows(seeds: U8Array, n_bytes: int, batch: int) -> U8Array:
    out = np.empty((KAPPA, n_bytes), dtype=np.uint8)
    for i in range(KAPPA):  # 128 bulk AES-CTR calls, each producing a whole row
        out[i] = prg.expand_array(seeds[i].tobytes(), n_bytes, stream=batch)
    return out


def iknp_receiver_extend(
    choices: npt.ArrayLike, seeds0: U8Array, seeds1: U8Array, *, batch: int = 0
) -> tuple[U8Array, U64Array]:
    """Step 4 (OT receiver): extend 128 base OTs to m = len(choices) OTs.

    Args:
        choices: m choice bits r_j.
        seeds0, seeds1: the (128, 16) base-OT key pairs this party got as base-OT sender.
        batch: extension id, unique per use of the same seeds.

    Returns:
        u: (128, ceil(m/8)) uint8 message for the OT sender.
        t: (m, 2) uint64 rows t_j kept by the receiver.
    """
    r = _bits(choices, "IKNP choices")
    _check_seeds(seeds0, "seeds0")
    _check_seeds(seeds1, "seeds1")
    m = r.size
    n_bytes = -(-m // 8)
    t_cols = _prg_rows(seeds0, n_bytes, batch)
    u = _prg_rows(seeds1, n_bytes, batch)
    u ^= t_cols
    u ^= np.packbits(r, bitorder="little")[None, :]
    t = bit_transpose(t_cols, m).view(np.uint64)
    return u, t


def iknp_sender_extend(s: npt.ArrayLike, seeds_s: U8Array, u: U8Array, m: int, *, batch: int = 0) -> U64Array:
    """Step 5 (OT sender): rows q_j = t_j xor r_j s, (m, 2) uint64.

    Args:
        s: the 128 bits chosen by `iknp_sender_choose`.
        seeds_s: the (128, 16) keys k_i^{s_i} this party got as base-OT receiver.
        u: the receiver's (128, ceil(m/8)) message.
        m: number of OTs.
        batch: the same extension id the receiver used.
    """
    s_bits = _bits(s, "IKNP s")
    if s_bits.size != KAPPA:
        raise CryptoError(f"IKNP s must have {KAPPA} bits, got {s_bits.size}")
    _check_seeds(seeds_s, "seeds_s")
    n_bytes = -(-m // 8)
    if u.dtype != np.uint8 or u.shape != (KAPPA, n_bytes):
        raise CryptoError(f"IKNP u must be uint8 ({KAPPA}, {n_bytes}) for m={m}, got {u.dtype} {u.shape}")
    q_cols = _prg_rows(seeds_s, n_bytes, batch)
    q_cols[s_bits.astype(bool)] ^= u[s_bits.astype(bool)]
    return bit_transpose(q_cols, m).view(np.uint64)


def _s_block(s: npt.ArrayLike) -> U64Array:
    s_bits = _bits(s, "IKNP s")
    if s_bits.size != KAPPA:
        raise CryptoError(f"IKNP s must have {KAPPA} bits, got {s_bits.size}")
    return np.packbits(s_bits, bitorder="little").view(np.uint64)


def _hash_rows(rows: U64Array, batch: int) -> U64Array:
    if rows.dtype != np.uint64 or rows.ndim != 2 or rows.shape[1] != 2:
        raise CryptoError(f"OT rows must be uint64 (m, 2), got {rows.dtype} {rows.shape}")
    return prg.tccr(rows, np.arange(rows.shape[0], dtype=np.uint64), tweak_hi=batch)


def rot_sender(q: U64Array, s: npt.ArrayLike, *, batch: int = 0) -> tuple[U64Array, U64Array]:
    """Random OT, sender: the two random 16-byte messages (H(j, q_j), H(j, q_j xor s)), each (m, 2)."""
    return _hash_rows(q, batch), _hash_rows(q ^ _s_block(s), batch)


def rot_receiver(t: U64Array, *, batch: int = 0) -> U64Array:
    """Random OT, receiver: its message H(j, t_j) = the sender's message r_j, as (m, 2) uint64."""
    return _hash_rows(t, batch)


def ot_sender_encrypt(
    q: U64Array, s: npt.ArrayLike, x0: U64Array, x1: U64Array, *, batch: int = 0
) -> tuple[U64Array, U64Array]:
    """Step 6 (sender): mask the 16-byte message pairs (x0_j, x1_j), each (m, 2) uint64."""
    if x0.shape != q.shape or x1.shape != q.shape or x0.dtype != np.uint64 or x1.dtype != np.uint64:
        raise CryptoError(
            f"OT messages must be uint64 {q.shape}, got {x0.dtype} {x0.shape} / {x1.dtype} {x1.shape}"
        )
    pad0, pad1 = rot_sender(q, s, batch=batch)
    return x0 ^ pad0, x1 ^ pad1


def ot_receiver_decrypt(
    t: U64Array, choices: npt.ArrayLike, y0: U64Array, y1: U64Array, *, batch: int = 0
) -> U64Array:
    """Step 6 (receiver): unmask the chosen message x_j^{r_j}, (m, 2) uint64."""
    r = _bits(choices, "OT choices")
    if y0.shape != t.shape or y1.shape != t.shape or r.size != t.shape[0]:
        raise CryptoError(
            f"OT ciphertexts {y0.shape}/{y1.shape} and {r.size} choices do not match t {t.shape}"
        )
    chosen = np.where(r.astype(bool)[:, None], y1, y0)
    return chosen ^ rot_receiver(t, batch=batch)


def cot_sender(
    q: U64Array, s: npt.ArrayLike, delta: U64Array, *, batch: int = 0
) -> tuple[U64Array, U64Array]:
    """Correlated OT, sender: zero labels W_j = H(j, q_j) and corrections to send.

    The correction d_j = H(j, q_j xor s) xor W_j xor delta lets the receiver with choice r_j
    compute W_j xor r_j delta (free-XOR input labels with global offset `delta`, (2,) uint64).

    Returns:
        (zero_labels, corrections), each (m, 2) uint64; only the corrections are sent.
    """
    d = np.asarray(delta)
    if d.dtype != np.uint64 or d.shape != (2,):
        raise CryptoError(f"COT delta must be uint64 (2,), got {d.dtype} {d.shape}")
    zero, one = rot_sender(q, s, batch=batch)
    return zero, one ^ zero ^ d


def cot_receiver(t: U64Array, choices: npt.ArrayLike, corrections: U64Array, *, batch: int = 0) -> U64Array:
    """Correlated OT, receiver: labels W_j xor r_j delta, (m, 2) uint64."""
    r = _bits(choices, "COT choices")
    if corrections.shape != t.shape or r.size != t.shape[0]:
        raise CryptoError(f"COT corrections {corrections.shape} / {r.size} choices do not match t {t.shape}")
    labels = rot_receiver(t, batch=batch)
    labels[r.astype(bool)] ^= corrections[r.astype(bool)]
    return labels


# ---------------------------------------------------------------------------- helpers


def _bits(values: npt.ArrayLike, what: str) -> U8Array:
    arr = np.asarray(values).reshape(-1)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "ui" or (arr.size and int(arr.max()) > 1) or (arr.size and int(arr.min()) < 0):
        raise CryptoError(f"{what} must be bits (0/1), got dtype {arr.dtype}")
    return arr.astype(np.uint8)


def _rows(items: list[bytes], width: int) -> U8Array:
    return np.frombuffer(b"".join(items), dtype=np.uint8).reshape(-1, width).copy()
