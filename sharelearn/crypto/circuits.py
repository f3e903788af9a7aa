"""Boolean circuits as layered gate arrays, with builders for the MPC comparison family.

A `Circuit` is a list of `Layer`s. Every gate of a layer reads only wires written by earlier
layers (or inputs), so a garbler/evaluator processes one whole layer, for a whole batch of
circuit instances, with a few numpy operations. Gates are XOR and INV (free with free-XOR) and
AND (two ciphertexts with half-gates). Wires are *slots*: `CircuitBuilder.build` removes dead
gates and reuses the slot of a wire after its last reader, so the label array of a garbler
stays small (a 64-bit ReLU needs ~200 slots instead of ~800 wires).

Words are lists of wires, least significant bit first. Builders (all cached, circuits are
immutable):

* `adder_circuit(n)`: garbler a, evaluator b -> a + b mod 2^n (ripple carry, n - 1 AND).
* `lt_circuit(n, signed)`: a < b (n AND); `eq_circuit(n)`: a == b (n - 1 AND, log depth).
* `share_sign_circuit(n)`: the A2B-style sign test: garbler x_0, evaluator x_1 -> msb(x_0 + x_1),
  i.e. x < 0 for x = x_0 + x_1 in Z_2^n (n - 1 AND). Comparing shared x < y is the sign of the
  locally computed shares of x - y (valid while |x - y| < 2^(n-1)).
* `share_relu_circuit(n)`: ReLU(x_0 + x_1) (2n - 1 AND), optionally minus a garbler mask r
  (+ n - 1 AND), so the evaluator's output is its additive share and r the garbler's.
* `share_max_circuit(k, n)` / `share_argmax_circuit(k, n)`: max / argmax of k shared values.

Masked variants XOR (boolean outputs) or subtract (arithmetic outputs) a garbler-held mask, so
the evaluator learns only its share. `evaluate_plain` is the plaintext oracle for tests.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import I64Array, U8Array, U64Array

__all__ = [
    "ONE",
    "ZERO",
    "Circuit",
    "CircuitBuilder",
    "Layer",
    "adder_circuit",
    "bits_to_u64",
    "eq_circuit",
    "evaluate_plain",
    "lt_circuit",
    "share_argmax_circuit",
    "share_max_circuit",
    "share_relu_circuit",
    "share_sign_circuit",
    "u64_to_bits",
    "word_add",
    "word_argmax",
    "word_eq",
    "word_lt",
    "word_mux",
    "word_sub",
]

ZERO = -1  # constant-false pseudo-wire (folded away by the builder)
ONE = -2  # constant-true pseudo-wire
_XOR, _AND, _INV = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Layer:
    """The gates of one layer, as slot-index arrays.

    Attributes:
        xor: (k, 3) int64 rows [in0, in1, out].
        and_: (k, 3) int64 rows [in0, in1, out].
        and_ids: (k,) int64 global AND index of each AND gate (its garbled-table row).
        inv: (k, 2) int64 rows [in, out].
    """

    xor: I64Array
    and_: I64Array
    and_ids: I64Array
    inv: I64Array

    def __post_init__(self) -> None:
        # Garbling writes a layer's tables as one slice, so its AND ids must be consecutive.
        ids = self.and_ids
        if ids.size and not np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
            raise CryptoError("a layer's AND gate ids must be consecutive")
        if self.and_.shape[0] != ids.size:
            raise CryptoError(f"layer has {self.and_.shape[0]} AND gates but {ids.size} ids")


@dataclass(frozen=True, slots=True)
class Circuit:
    """An immutable layered boolean circuit over `n_slots` wire slots."""

    name: str
    n_slots: int
    garbler_inputs: I64Array
    evaluator_inputs: I64Array
    outputs: I64Array
    layers: tuple[Layer, ...]
    n_and: int
    n_xor: int = field(default=0)

    def __repr__(self) -> str:
        return (
            f"Circuit({self.name!r}, inputs={self.garbler_inputs.size}+{self.evaluator_inputs.size}, "
            f"outputs={self.outputs.size}, and={self.n_and}, xor={self.n_xor}, layers={len(self.layers)}, "
            f"slots={self.n_slots})"
        )


class CircuitBuilder:
    """Build a circuit gate by gate; constants fold away and dead gates are dropped at `build`."""

    def __init__(self) -> None:
        self._n_wires = 0
        self._garbler: list[int] = []
        self._evaluator: list[int] = []
        self._gates: list[tuple[int, int, int, int]] = []  # (kind, in0, in1, out); in1 = -1 for INV

    def _new_wire(self) -> int:
        self._n_wires += 1
        return self._n_wires - 1

    def garbler_input(self, n_bits: int) -> list[int]:
        """Declare `n_bits` input wires held by the garbler (LSB first)."""
        wires = [self._new_wire() for _ in range(n_bits)]
        self._garbler.extend(wires)
        return wires

    def evaluator_input(self, n_bits: int) -> list[int]:
        """Declare `n_bits` input wires held by the evaluator (LSB first)."""
        wires = [self._new_wire() for _ in range(n_bits)]
        self._evaluator.extend(wires)
        return wires

    def xor(self, a: int, b: int) -> int:
        """Return a wire carrying a XOR b."""
        if a == ZERO:
            return b
        if b == ZERO:
            return a
        if a == ONE:
            return self.inv(b)
        if b == ONE:
            return self.inv(a)
        if a == b:
            return ZERO
        out = self._new_wire()
        self._gates.append((_XOR, a, b, out))
        return out

    def and_(self, a: int, b: int) -> int:
        """Return a wire carrying a AND b."""
        if ZERO in (a, b):
            return ZERO
        if a == ONE:
            return b
        if b == ONE or a == b:
            return a
        out = self._new_wire()
        self._gates.append((_AND, a, b, out))
        return out

    def inv(self, a: int) -> int:
        """Return a wire carrying NOT a."""
        if a in (ZERO, ONE):
            return ONE if a == ZERO else ZERO
        out = self._new_wire()
        self._gates.append((_INV, a, -1, out))
        return out

    def or_(self, a: int, b: int) -> int:
        """Return a wire carrying a OR b (one AND: a xor b xor ab)."""
        return self.xor(self.xor(a, b), self.and_(a, b))

    def mux(self, sel: int, if_one: int, if_zero: int) -> int:
        """Return sel ? if_one : if_zero (one AND)."""
        return self.xor(if_zero, self.and_(sel, self.xor(if_one, if_zero)))

    def build(self, outputs: Sequence[int], name: str) -> Circuit:
        """Freeze the circuit: drop dead gates, layer the rest, allocate slots.

        Raises:
            CryptoError: if an output is a constant (the garbler would leak nothing, but the
                evaluator could not decode it; compute it from an input instead).
        """
        if any(w < 0 for w in outputs):
            raise CryptoError(f"circuit {name!r}: an output is a constant; no gate computes it")
        gates = _live_gates(self._gates, outputs)
        level = _levels(gates, self._n_wires)
        return _allocate(name, gates, level, self._garbler, self._evaluator, list(outputs), self._n_wires)


def _live_gates(
    gates: list[tuple[int, int, int, int]], outputs: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    live = set(outputs)
    kept = []
    for gate in reversed(gates):
        kind, a, b, out = gate
        if out in live:
            kept.append(gate)
            live.add(a)
            if kind != _INV:
                live.add(b)
    kept.reverse()
    return kept


def _levels(gates: list[tuple[int, int, int, int]], n_wires: int) -> list[int]:
    depth = [0] * n_wires
    out = []
    for kind, a, b, w in gates:
        d = 1 + max(depth[a], depth[b] if kind != _INV else 0)
        depth[w] = d
        out.append(d)
    return out


def _schedule(
    gates: list[tuple[int, int, int, int]], level: list[int], outputs: list[int], n_wires: int, n_levels: int
) -> tuple[list[int], list[list[tuple[int, int, int, int]]]]:
    """Each wire's last reading level (outputs: past the end) and the gates of every level."""
    last_use = [0] * n_wires
    for (kind, a, b, _), lv in zip(gates, level, strict=True):
        last_use[a] = max(last_use[a], lv)
        if kind != _INV:
            last_use[b] = max(last_use[b], lv)
    for w in outputs:
        last_use[w] = n_levels + 1
    by_level: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n_levels + 1)]
    for gate, lv in zip(gates, level, strict=True):
        by_level[lv].append(gate)
    return last_use, by_level


def _allocate(
    name: str,
    gates: list[tuple[int, int, int, int]],
    level: list[int],
    garbler: list[int],
    evaluator: list[int],
    outputs: list[int],
    n_wires: int,
) -> Circuit:
    n_levels = max(level, default=0)
    last_use, by_level = _schedule(gates, level, outputs, n_wires, n_levels)
    slot: dict[int, int] = {}
    for w in garbler + evaluator:
        slot[w] = len(slot)
    n_slots = len(slot)
    free: list[int] = []
    dying: list[list[int]] = [[] for _ in range(n_levels + 2)]
    for w in garbler + evaluator:
        dying[last_use[w]].append(w)
    free.extend(slot[w] for w in dying[0])
    layers, and_count, xor_count = [], 0, 0
    for lv in range(1, n_levels + 1):
        xs, ands, invs, ids = [], [], [], []
        for kind, a, b, w in by_level[lv]:
            if free:
                slot[w] = free.pop()
            else:
                slot[w], n_slots = n_slots, n_slots + 1
            dying[last_use[w]].append(w)
            if kind == _XOR:
                xs.append((slot[a], slot[b], slot[w]))
            elif kind == _AND:
                ands.append((slot[a], slot[b], slot[w]))
                ids.append(and_count)
                and_count += 1
            else:
                invs.append((slot[a], slot[w]))
        xor_count += len(xs)
        layers.append(Layer(_arr(xs, 3), _arr(ands, 3), np.asarray(ids, dtype=np.int64), _arr(invs, 2)))
        # Wires whose last reader is in this layer free their slots for the next layers only.
        free.extend(slot[w] for w in dying[lv])
    return Circuit(
        name=name,
        n_slots=n_slots,
        garbler_inputs=np.asarray([slot[w] for w in garbler], dtype=np.int64),
        evaluator_inputs=np.asarray([slot[w] for w in evaluator], dtype=np.int64),
        outputs=np.asarray([slot[w] for w in outputs], dtype=np.int64),
        layers=tuple(layers),
        n_and=and_count,
        n_xor=xor_count,
    )


def _arr(rows: Sequence[tuple[int, ...]], width: int) -> I64Array:
    return np.asarray(rows, dtype=np.int64).reshape(-1, width)


# ---------------------------------------------------------------------------- plaintext evaluation


def evaluate_plain(circuit: Circuit, garbler_bits: npt.ArrayLike, evaluator_bits: npt.ArrayLike) -> U8Array:
    """Evaluate the circuit in the clear on a batch: bits (n_inputs, batch) -> (n_outputs, batch)."""
    g = np.asarray(garbler_bits, dtype=np.uint8)
    e = np.asarray(evaluator_bits, dtype=np.uint8)
    if g.ndim != 2 or e.ndim != 2 or g.shape[0] != circuit.garbler_inputs.size:
        raise CryptoError(
            f"{circuit.name}: garbler bits must be ({circuit.garbler_inputs.size}, batch), got {g.shape}"
        )
    if e.shape != (circuit.evaluator_inputs.size, g.shape[1]):
        raise CryptoError(
            f"{circuit.name}: evaluator bits must be ({circuit.evaluator_inputs.size}, {g.shape[1]}),"
            f" got {e.shape}"
        )
    wires = np.zeros((circuit.n_slots, g.shape[1]), dtype=np.uint8)
    wires[circuit.garbler_inputs] = g
    wires[circuit.evaluator_inputs] = e
    for layer in circuit.layers:
        x, a, v = layer.xor, layer.and_, layer.inv
        wires[x[:, 2]] = wires[x[:, 0]] ^ wires[x[:, 1]]
        wires[a[:, 2]] = wires[a[:, 0]] & wires[a[:, 1]]
        wires[v[:, 1]] = wires[v[:, 0]] ^ 1
    return wires[circuit.outputs]


def u64_to_bits(x: npt.ArrayLike, n_bits: int = 64) -> U8Array:
    """Bits of uint64 values, LSB first: (batch,) -> (n_bits, batch) uint8."""
    arr = np.asarray(x)
    if arr.dtype == np.int64:
        arr = arr.view(np.uint64)
    if arr.dtype != np.uint64 or arr.ndim != 1:
        raise CryptoError(f"u64_to_bits needs a 1-d uint64 array, got {arr.dtype} {arr.shape}")
    if not 1 <= n_bits <= 64:
        raise CryptoError(f"n_bits must be in 1..64, got {n_bits}")
    raw = np.ascontiguousarray(arr).astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(np.unpackbits(raw, axis=1, bitorder="little")[:, :n_bits].T)


def bits_to_u64(bits: npt.ArrayLike) -> U64Array:
    """Inverse of `u64_to_bits`: (n_bits, batch) -> (batch,) uint64."""
    arr = np.asarray(bits, dtype=np.uint8)
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= 64:
        raise CryptoError(f"bits_to_u64 needs (n_bits <= 64, batch) bits, got {arr.shape}")
    padded = np.zeros((arr.shape[1], 64), dtype=np.uint8)
    padded[:, : arr.shape[0]] = arr.T
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(-1).astype(np.uint64)


# ---------------------------------------------------------------------------- word-level gadgets


def word_add(
    bld: CircuitBuilder, a: Sequence[int], b: Sequence[int], carry: int = ZERO
) -> tuple[list[int], int]:
    """Ripple-carry a + b + carry (one AND per bit): returns (sum bits, carry out)."""
    if len(a) != len(b):
        raise CryptoError(f"word_add: widths differ ({len(a)} vs {len(b)})")
    out = []
    for ai, bi in zip(a, b, strict=True):
        out.append(bld.xor(bld.xor(ai, bi), carry))
        # carry' = c xor ((a xor c) and (b xor c)) = majority(a, b, c)
        carry = bld.xor(carry, bld.and_(bld.xor(ai, carry), bld.xor(bi, carry)))
    return out, carry


def word_sub(bld: CircuitBuilder, a: Sequence[int], b: Sequence[int]) -> tuple[list[int], int]:
    """a - b = a + ~b + 1: returns (difference bits, carry out = [a >= b unsigned])."""
    return word_add(bld, a, [bld.inv(w) for w in b], ONE)


def word_lt(bld: CircuitBuilder, a: Sequence[int], b: Sequence[int], *, signed: bool = True) -> int:
    """Return a wire carrying a < b (two's complement if `signed`)."""
    if signed:  # flipping both sign bits maps signed order onto unsigned order
        a = [*a[:-1], bld.inv(a[-1])]
        b = [*b[:-1], bld.inv(b[-1])]
    _, geq = word_sub(bld, a, b)
    return bld.inv(geq)


def word_eq(bld: CircuitBuilder, a: Sequence[int], b: Sequence[int]) -> int:
    """Return a wire carrying a == b (balanced AND tree, depth log2 n)."""
    level = [bld.inv(bld.xor(x, y)) for x, y in zip(a, b, strict=True)]
    while len(level) > 1:
        pairs = [bld.and_(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def word_mux(bld: CircuitBuilder, sel: int, if_one: Sequence[int], if_zero: Sequence[int]) -> list[int]:
    """Bitwise sel ? if_one : if_zero."""
    return [bld.mux(sel, x, y) for x, y in zip(if_one, if_zero, strict=True)]


def word_argmax(bld: CircuitBuilder, values: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Signed max and argmax (first index on ties) of k words by a tournament tree.

    Returns:
        (max word, index bits LSB first, ceil(log2 k) of them, at least one).
    """
    if not values:
        raise CryptoError("word_argmax needs at least one value")
    idx_bits = max(1, (len(values) - 1).bit_length())
    entries = [
        (list(v), [ONE if (i >> j) & 1 else ZERO for j in range(idx_bits)]) for i, v in enumerate(values)
    ]
    while len(entries) > 1:
        nxt = []
        for i in range(0, len(entries) - 1, 2):
            (va, ia), (vb, ib) = entries[i], entries[i + 1]
            take_b = word_lt(bld, va, vb)  # strict: ties keep the earlier index
            nxt.append((word_mux(bld, take_b, vb, va), word_mux(bld, take_b, ib, ia)))
        if len(entries) % 2:
            nxt.append(entries[-1])
        entries = nxt
    return entries[0]


# ---------------------------------------------------------------------------- circuits


def _check_bits(n_bits: int) -> None:
    if not 2 <= n_bits <= 64:
        raise CryptoError(f"word width must be in 2..64 bits, got {n_bits}")


def _mask_bool(bld: CircuitBuilder, outs: list[int], masked: bool) -> list[int]:
    if not masked:
        return outs
    mask = bld.garbler_input(len(outs))
    return [bld.xor(o, m) for o, m in zip(outs, mask, strict=True)]


def _mask_arith(bld: CircuitBuilder, word: list[int], masked: bool) -> list[int]:
    if not masked:
        return word
    r = bld.garbler_input(len(word))
    return word_sub(bld, word, r)[0]


@functools.lru_cache(maxsize=64)
def adder_circuit(n_bits: int = 64) -> Circuit:
    """Garbler a, evaluator b (n bits each) -> a + b mod 2^n (n bits)."""
    _check_bits(n_bits)
    bld = CircuitBuilder()
    a, b = bld.garbler_input(n_bits), bld.evaluator_input(n_bits)
    return bld.build(word_add(bld, a, b)[0], f"add{n_bits}")


@functools.lru_cache(maxsize=64)
def lt_circuit(n_bits: int = 64, signed: bool = True) -> Circuit:
    """Garbler a, evaluator b -> [a < b] (one output bit)."""
    _check_bits(n_bits)
    bld = CircuitBuilder()
    a, b = bld.garbler_input(n_bits), bld.evaluator_input(n_bits)
    return bld.build([word_lt(bld, a, b, signed=signed)], f"lt{n_bits}{'s' if signed else 'u'}")


@functools.lru_cache(maxsize=64)
def eq_circuit(n_bits: int = 64) -> Circuit:
    """Garbler a, evaluator b -> [a == b]."""
    _check_bits(n_bits)
    bld = CircuitBuilder()
    a, b = bld.garbler_input(n_bits), bld.evaluator_input(n_bits)
    return bld.build([word_eq(bld, a, b)], f"eq{n_bits}")


@functools.lru_cache(maxsize=64)
def share_sign_circuit(n_bits: int = 64, masked: bool = False) -> Circuit:
    """Garbler x_0 [, mask bit m], evaluator x_1 -> [x_0 + x_1 < 0] [xor m] (n - 1 AND)."""
    _check_bits(n_bits)
    bld = CircuitBuilder()
    x0, x1 = bld.garbler_input(n_bits), bld.evaluator_input(n_bits)
    total, _ = word_add(bld, x0, x1)
    return bld.build(_mask_bool(bld, [total[-1]], masked), f"sign{n_bits}{'m' if masked else ''}")


@functools.lru_cache(maxsize=64)
def share_relu_circuit(n_bits: int = 64, masked: bool = True) -> Circuit:
    """Garbler x_0 [, mask r], evaluator x_1 -> ReLU(x_0 + x_1) [- r] mod 2^n (n output bits).

    ReLU(x) = x AND NOT sign(x), bitwise; 2n - 2 AND unmasked, 3n - 3 with the mask.
    """
    _check_bits(n_bits)
    bld = CircuitBuilder()
    x0, x1 = bld.garbler_input(n_bits), bld.evaluator_input(n_bits)
    total, _ = word_add(bld, x0, x1)
    positive = bld.inv(total[-1])
    relu = [bld.and_(w, positive) for w in total[:-1]] + [ZERO]
    if not masked:  # the top bit of a ReLU is always 0: compute it from a wire so it can be output
        relu[-1] = bld.and_(total[-1], positive)
    return bld.build(_mask_arith(bld, relu, masked), f"relu{n_bits}{'m' if masked else ''}")


def _shared_argmax(k: int, n_bits: int, name: str) -> tuple[CircuitBuilder, list[int], list[int]]:
    """A builder with k garbler and k evaluator words, and the max word and argmax bits of their sums."""
    _check_bits(n_bits)
    if k < 2:
        raise CryptoError(f"{name} needs k >= 2 values, got {k}")
    bld = CircuitBuilder()
    g = [bld.garbler_input(n_bits) for _ in range(k)]
    e = [bld.evaluator_input(n_bits) for _ in range(k)]
    best, index = word_argmax(bld, [word_add(bld, a, b)[0] for a, b in zip(g, e, strict=True)])
    return bld, best, index


@functools.lru_cache(maxsize=64)
def share_max_circuit(k: int, n_bits: int = 64, masked: bool = True) -> Circuit:
    """Garbler k words x_0^i [, mask r], evaluator k words x_1^i -> max_i (x_0^i + x_1^i) [- r]."""
    bld, best, _ = _shared_argmax(k, n_bits, "share_max_circuit")
    return bld.build(_mask_arith(bld, best, masked), f"max{k}x{n_bits}{'m' if masked else ''}")


@functools.lru_cache(maxsize=64)
def share_argmax_circuit(k: int, n_bits: int = 64, masked: bool = True) -> Circuit:
    """Garbler k words [, mask bits], evaluator k words -> argmax index bits [xor mask] (LSB first)."""
    bld, _, index = _shared_argmax(k, n_bits, "share_argmax_circuit")
    if any(w < 0 for w in index):
        raise CryptoError(f"argmax of {k} values produced a constant index bit")
    return bld.build(_mask_bool(bld, index, masked), f"argmax{k}x{n_bits}{'m' if masked else ''}")
