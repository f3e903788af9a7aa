"""Yao garbled circuits: free-XOR, point-and-permute, half-gates, fixed-key AES, layer-vectorised.

References: Yao 1986; Kolesnikov & Schneider 2008 (free-XOR); Zahur, Rosulek & Evans 2015
(half-gates, 2 ciphertexts per AND); Bellare, Hoang, Keelveedhi & Rogaway 2013 (fixed-key AES
garbling); Guo, Katz, Wang & Yu 2020 (the `prg.tccr` hash used here).

Labels are 128-bit blocks held as (..., 2) uint64. The garbler draws a global offset Delta with
lsb 1; wire w has labels W_w^0 and W_w^1 = W_w^0 xor Delta, and the lsb of a label is its
permute bit. XOR gates: W_out^0 = W_a^0 xor W_b^0; INV: W_out^0 = W_a^0 xor Delta; the evaluator
XORs (resp. copies) its labels. AND gate j (half-gates, tweaks 2j, 2j+1, p = lsb of zero labels):

    T_G = H(A0, 2j) ^ H(A1, 2j) ^ p_b Delta        W_G^0 = H(A0, 2j) ^ p_a T_G
    T_E = H(B0, 2j+1) ^ H(B1, 2j+1) ^ A0            W_E^0 = H(B0, 2j+1) ^ p_b (T_E ^ A0)
    W_out^0 = W_G^0 ^ W_E^0; the table row is (T_G, T_E).

The evaluator holding A, B (s_a, s_b their lsbs) computes W_G = H(A, 2j) ^ s_a T_G,
W_E = H(B, 2j+1) ^ s_b (T_E ^ A) and W_out = W_G ^ W_E.

Vectorisation: `garble` and `evaluate` work on a batch of instances of one circuit. For each
layer they gather all its AND gates' labels for all instances, hash them with two bulk AES calls
(`prg.tccr`), and scatter the results; XOR/INV gates are single numpy expressions. The only
Python loop is over layers. The tweak of AND gate g in instance b is 2 (g * batch + b) (+1), and
`tweak_base` (high 64 bits) separates garblings that reuse one Delta.

Protocol use (the operators layer moves the messages):
1. garbler: `garble` -> sends `GarbledCircuit` (tables + output decode bits) and
   `garbler_input_labels` for its own input bits.
2. evaluator: gets the labels of its own input bits by OT (`ot.cot_*` with this Delta, or
   chosen-message OT on `evaluator_label_pairs`).
3. evaluator: `evaluate` then `decode` -> output bits (masked circuits make these shares).

Leaks: to the evaluator, only the output bits (semi-honest; tables and active labels are
pseudorandom under the tccr assumption on fixed-key AES). To the garbler: nothing (it sees no
message back unless the outputs are sent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U8Array, U64Array
from sharelearn.crypto import prg
from sharelearn.crypto.circuits import Circuit, Layer
from sharelearn.crypto.rng import Rng, random_u64

__all__ = [
    "GarbledCircuit",
    "GarblerKeys",
    "decode",
    "evaluate",
    "evaluator_label_pairs",
    "garble",
    "garbler_input_labels",
    "new_delta",
]

_ONE = np.uint64(1)


@dataclass(frozen=True, slots=True)
class GarbledCircuit:
    """What the garbler sends: tables (n_and, 2, batch, 2) of (T_G, T_E), decode bits (n_out, batch)."""

    tables: U64Array
    decode_bits: U8Array
    batch: int
    tweak_base: int = 0

    def __repr__(self) -> str:
        return f"GarbledCircuit(and={self.tables.shape[0]}, batch={self.batch}, bytes={self.tables.nbytes})"


@dataclass(frozen=True, slots=True)
class GarblerKeys:
    """The garbler's secrets: Delta and the zero labels of every input wire ((n, batch, 2) each)."""

    delta: U64Array
    garbler_zero: U64Array
    evaluator_zero: U64Array

    def __repr__(self) -> str:  # labels and Delta are secret: knowing both labels of a wire breaks privacy
        n_g, n_e = self.garbler_zero.shape[0], self.evaluator_zero.shape[0]
        return f"GarblerKeys(garbler_inputs={n_g}, evaluator_inputs={n_e})"


def new_delta(rng: Rng | None = None) -> U64Array:
    """Draw a global free-XOR offset: 128 random bits with the lsb (permute bit) set to 1."""
    delta = random_u64(2, rng)
    delta[0] |= _ONE
    return delta


class _Workspace:
    """Per-call scratch buffers sized for the widest layer, so the layer loop allocates nothing.

    Every operation runs on contiguous (n, batch, 2) blocks: numpy is fast on those but slow when
    it must broadcast along the length-2 word axis, so Delta is tiled and permute-bit masks are
    widened to full blocks first.
    """

    def __init__(self, circuit: Circuit, batch: int, n_hashes: int, delta: U64Array | None) -> None:
        widest_and = max((layer.and_.shape[0] for layer in circuit.layers), default=0)
        widest_free = max(
            (max(layer.xor.shape[0], layer.inv.shape[0]) for layer in circuit.layers), default=0
        )
        g, f = max(widest_and, 1) * batch, max(widest_free, 1) * batch
        self.batch = batch
        self.blocks = np.empty(n_hashes * g * 2, dtype=np.uint64)
        self.scratch = np.empty(2 * n_hashes * g * 2 + 4, dtype=np.uint64)
        self.tweaks = np.empty((2, g), dtype=np.uint64)
        self.count = np.arange(g, dtype=np.uint64)
        self.saved = np.empty(g * 2, dtype=np.uint64)
        self.mask_a = np.empty(g * 2, dtype=np.uint64)
        self.mask_b = np.empty(g * 2, dtype=np.uint64)
        self.left = np.empty(max(f, g) * 2, dtype=np.uint64)
        self.right = np.empty(f * 2, dtype=np.uint64)
        self.delta = None if delta is None else np.tile(delta, max(f, g))

    def view(self, buf: U64Array, shape: tuple[int, ...]) -> U64Array:
        """The front of a flat buffer as a contiguous array of `shape`."""
        return buf[: int(np.prod(shape))].reshape(shape)

    def deltas(self, shape: tuple[int, ...]) -> U64Array:
        """Delta repeated into a contiguous (n, batch, 2) block."""
        if self.delta is None:
            raise CryptoError("internal: the evaluator has no Delta")
        return self.view(self.delta, shape)

    def lsb_mask(self, buf: U64Array, labels: U64Array) -> U64Array:
        """All-ones words where a label's permute bit is 1, as a block shaped like `labels`."""
        mask = self.view(buf, labels.shape)
        np.bitwise_and(labels[..., 0], _ONE, out=mask[..., 0])
        np.negative(mask[..., 0], out=mask[..., 0])  # 1 -> 2^64 - 1
        mask[..., 1] = mask[..., 0]
        return mask

    def and_tweaks(self, first_and: int, n_gates: int) -> U64Array:
        """(2, n_gates * batch) tweaks 2 (g * batch + b) and 2 (g * batch + b) + 1."""
        size = n_gates * self.batch
        tw = self.tweaks[:, :size]
        np.add(self.count[:size], np.uint64(first_and * self.batch), out=tw[0])
        np.left_shift(tw[0], _ONE, out=tw[0])
        np.bitwise_or(tw[0], _ONE, out=tw[1])
        return tw

    def gather(self, buf: U64Array, labels: U64Array, idx: npt.NDArray[np.int64]) -> U64Array:
        """labels[idx] into the front of `buf`, shaped (len(idx), batch, 2)."""
        out = self.view(buf, (idx.size, self.batch, 2))
        np.take(labels, idx, axis=0, out=out, mode="clip")  # mode="clip" avoids a buffered copy
        return out

    def free_gates(self, labels: U64Array, layer: Layer) -> None:
        """XOR gates, and INV gates (xor Delta for the garbler, a copy for the evaluator)."""
        x, v = layer.xor, layer.inv
        if x.shape[0]:
            left = self.gather(self.left, labels, x[:, 0])
            np.bitwise_xor(left, self.gather(self.right, labels, x[:, 1]), out=left)
            labels[x[:, 2]] = left
        if v.shape[0]:
            left = self.gather(self.left, labels, v[:, 0])
            if self.delta is not None:
                np.bitwise_xor(left, self.deltas(left.shape), out=left)
            labels[v[:, 1]] = left


def _check_delta(delta: npt.ArrayLike) -> U64Array:
    d = np.asarray(delta)
    if d.dtype != np.uint64 or d.shape != (2,) or not int(d[0]) & 1:
        raise CryptoError("Delta must be a uint64 (2,) block with lsb 1")
    return d


def _evaluator_zero(circuit: Circuit, batch: int, given: U64Array | None, rng: Rng | None) -> U64Array:
    """The evaluator's zero labels (n_e, batch, 2): the given ones, checked, or fresh random ones."""
    n_e = circuit.evaluator_inputs.size
    if given is None:
        return random_u64((n_e, batch, 2), rng)
    e_zero = np.asarray(given)
    if e_zero.dtype != np.uint64 or e_zero.shape != (n_e, batch, 2):
        raise CryptoError(
            f"{circuit.name}: evaluator_zero must be uint64 ({n_e}, {batch}, 2), got {e_zero.shape}"
        )
    return e_zero


def garble(
    circuit: Circuit,
    batch: int,
    rng: Rng | None = None,
    *,
    delta: U64Array | None = None,
    evaluator_zero: U64Array | None = None,
    tweak_base: int = 0,
) -> tuple[GarbledCircuit, GarblerKeys]:
    """Garble `batch` independent instances of `circuit`.

    Args:
        circuit: the layered circuit.
        batch: number of instances (each gets fresh labels; tables are (n_and, 2, batch, 2)).
        rng: randomness for Delta and input labels (default: the OS CSPRNG).
        delta: reuse a given Delta (e.g. one fixed by correlated OT); default a fresh one.
        evaluator_zero: zero labels for the evaluator's inputs, (n_e, batch, 2), e.g. the
            `zero_labels` of `ot.cot_sender`; default random.
        tweak_base: public value in the high 64 bits of every hash tweak; must differ between
            garblings that share one Delta.

    Returns:
        (garbled circuit to send, garbler keys to keep).
    """
    if batch < 1:
        raise CryptoError(f"{circuit.name}: batch must be positive, got {batch}")
    d = new_delta(rng) if delta is None else _check_delta(delta)
    g_zero = random_u64((circuit.garbler_inputs.size, batch, 2), rng)
    e_zero = _evaluator_zero(circuit, batch, evaluator_zero, rng)
    labels = np.empty((circuit.n_slots, batch, 2), dtype=np.uint64)
    labels[circuit.garbler_inputs] = g_zero
    labels[circuit.evaluator_inputs] = e_zero
    tables = np.empty((circuit.n_and, 2, batch, 2), dtype=np.uint64)
    ws = _Workspace(circuit, batch, n_hashes=4, delta=d)
    for layer in circuit.layers:
        ws.free_gates(labels, layer)
        if layer.and_.shape[0]:
            _garble_ands(ws, labels, tables, layer, tweak_base)
    decode_bits = (labels[circuit.outputs, :, 0] & _ONE).astype(np.uint8)
    return GarbledCircuit(tables, decode_bits, batch, tweak_base), GarblerKeys(d, g_zero, e_zero)


def _garble_ands(ws: _Workspace, labels: U64Array, tables: U64Array, layer: Layer, tweak_base: int) -> None:
    gates, n_gates, first = layer.and_, layer.and_.shape[0], int(layer.and_ids[0])
    a0 = ws.gather(ws.saved, labels, gates[:, 0])
    delta = ws.deltas(a0.shape)
    blk = ws.view(ws.blocks, (2, 2, *a0.shape))  # [A | B][zero | one label]
    blk[0, 0] = a0
    np.bitwise_xor(a0, delta, out=blk[0, 1])
    ws.gather(blk[1, 0].reshape(-1), labels, gates[:, 1])
    np.bitwise_xor(blk[1, 0], delta, out=blk[1, 1])
    m_a, m_b = ws.lsb_mask(ws.mask_a, blk[0, 0]), ws.lsb_mask(ws.mask_b, blk[1, 0])
    tweaks = ws.and_tweaks(first, n_gates).reshape(2, 1, n_gates, ws.batch)
    prg.tccr_into(blk, tweaks, ws.scratch, tweak_hi=tweak_base)
    (ha0, ha1), (hb0, hb1) = blk
    table = tables[first : first + n_gates]
    t_g, t_e = table[:, 0], table[:, 1]
    pb_delta = ws.view(ws.left, a0.shape)
    np.bitwise_and(m_b, delta, out=pb_delta)
    np.bitwise_xor(ha0, ha1, out=t_g)
    np.bitwise_xor(t_g, pb_delta, out=t_g)  # T_G = H(A0) ^ H(A1) ^ p_b Delta
    np.bitwise_and(m_a, t_g, out=m_a)
    np.bitwise_xor(ha0, m_a, out=ha0)  # W_G^0 = H(A0) ^ p_a T_G
    np.bitwise_xor(hb1, hb0, out=hb1)  # H(B0) ^ H(B1)
    np.bitwise_xor(hb1, a0, out=t_e)  # T_E = H(B0) ^ H(B1) ^ A0
    np.bitwise_and(m_b, hb1, out=m_b)
    np.bitwise_xor(hb0, m_b, out=hb0)  # W_E^0 = H(B0) ^ p_b (T_E ^ A0) = H(B0) ^ p_b (H(B0) ^ H(B1))
    np.bitwise_xor(ha0, hb0, out=ha0)
    labels[gates[:, 2]] = ha0


def garbler_input_labels(keys: GarblerKeys, bits: npt.ArrayLike) -> U64Array:
    """The active labels W^0 xor x Delta of the garbler's own input bits (n_g, batch) -> (n_g, batch, 2)."""
    x = np.asarray(bits)
    if x.shape != keys.garbler_zero.shape[:2] or x.dtype.kind not in "uib":
        raise CryptoError(f"garbler input bits must have shape {keys.garbler_zero.shape[:2]}, got {x.shape}")
    mask = np.uint64(0) - (x.astype(np.uint64) & _ONE)
    return keys.garbler_zero ^ (mask[..., None] & keys.delta)


def evaluator_label_pairs(keys: GarblerKeys) -> tuple[U64Array, U64Array]:
    """Both labels (W^0, W^1) of each evaluator input, (n_e, batch, 2) each: the OT sender's messages."""
    return keys.evaluator_zero, keys.evaluator_zero ^ keys.delta


def evaluate(
    circuit: Circuit, garbled: GarbledCircuit, garbler_labels: U64Array, evaluator_labels: U64Array
) -> U64Array:
    """Evaluate the garbled batch on active input labels; returns output labels (n_out, batch, 2).

    Raises:
        CryptoError: if the tables or labels do not fit the circuit.
    """
    batch = garbled.batch
    if garbled.tables.shape != (circuit.n_and, 2, batch, 2) or garbled.tables.dtype != np.uint64:
        raise CryptoError(f"{circuit.name}: tables must be uint64 ({circuit.n_and}, 2, {batch}, 2)")
    for what, arr, n in (
        ("garbler", garbler_labels, circuit.garbler_inputs.size),
        ("evaluator", evaluator_labels, circuit.evaluator_inputs.size),
    ):
        if arr.dtype != np.uint64 or arr.shape != (n, batch, 2):
            raise CryptoError(
                f"{circuit.name}: {what} labels must be uint64 ({n}, {batch}, 2), got {arr.shape}"
            )
    labels = np.empty((circuit.n_slots, batch, 2), dtype=np.uint64)
    labels[circuit.garbler_inputs] = garbler_labels
    labels[circuit.evaluator_inputs] = evaluator_labels
    ws = _Workspace(circuit, batch, n_hashes=2, delta=None)
    for layer in circuit.layers:
        ws.free_gates(labels, layer)
        if layer.and_.shape[0]:
            _evaluate_ands(ws, labels, garbled, layer)
    return labels[circuit.outputs]


def _evaluate_ands(ws: _Workspace, labels: U64Array, garbled: GarbledCircuit, layer: Layer) -> None:
    gates, n_gates, first = layer.and_, layer.and_.shape[0], int(layer.and_ids[0])
    table = garbled.tables[first : first + n_gates]
    blk = ws.view(ws.blocks, (2, n_gates, ws.batch, 2))  # [A | B]
    ws.gather(blk[0].reshape(-1), labels, gates[:, 0])
    ws.gather(blk[1].reshape(-1), labels, gates[:, 1])
    m_a, m_b = ws.lsb_mask(ws.mask_a, blk[0]), ws.lsb_mask(ws.mask_b, blk[1])
    te_a = ws.view(ws.saved, blk[0].shape)
    np.bitwise_xor(table[:, 1], blk[0], out=te_a)  # T_E ^ A, before hashing overwrites A
    tweaks = ws.and_tweaks(first, n_gates).reshape(2, n_gates, ws.batch)
    prg.tccr_into(blk, tweaks, ws.scratch, tweak_hi=garbled.tweak_base)
    h_a, h_b = blk
    np.bitwise_and(m_a, table[:, 0], out=m_a)
    np.bitwise_xor(h_a, m_a, out=h_a)  # W_G = H(A) ^ s_a T_G
    np.bitwise_and(m_b, te_a, out=m_b)
    np.bitwise_xor(h_b, m_b, out=h_b)  # W_E = H(B) ^ s_b (T_E ^ A)
    np.bitwise_xor(h_a, h_b, out=h_a)
    labels[gates[:, 2]] = h_a


def decode(garbled: GarbledCircuit, output_labels: U64Array) -> U8Array:
    """Output bits (n_out, batch): the lsb of each output label xor its decode bit."""
    if output_labels.shape[:2] != garbled.decode_bits.shape:
        raise CryptoError(
            f"output labels {output_labels.shape} do not match decode bits {garbled.decode_bits.shape}"
        )
    return ((output_labels[..., 0] & _ONE).astype(np.uint8)) ^ garbled.decode_bits
