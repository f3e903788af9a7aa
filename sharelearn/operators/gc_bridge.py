"""Arithmetic <-> boolean conversion through garbled circuits: comparison, ReLU, argmax (ABY's Y-shares).

Party 0 garbles, party 1 evaluates. For a batch of shared values x = x_0 + x_1 mod 2^64:

1. A2B: the circuit adds x_0 (garbler input bits) and x_1 (evaluator input bits) in the circuit,
   so no separate conversion step is needed (`circuits.share_*_circuit`).
2. party 1 -> party 0: the IKNP message u for its 64 input bits per value (`operators.ot`).
3. party 0 -> party 1, one message: the OT corrections (labels of x_1), the garbled tables, the
   labels of x_0 and of a fresh mask m, and the output decode bits. Party 1 evaluates and
   decodes c = f(x) xor m.
4. B2A: party 0 holds m, party 1 holds c; for one bit b = c + m - 2 c m, and the product c m of two
   values each known to one party is one Beaver multiplication (`SSOps.mul_ring`).

Costs per value: sign / comparison 63 AND gates (32 B each) + 64 OTs, then one Beaver round;
ReLU is x * [x >= 0] (one more Beaver round); argmax over k values is a tournament of k - 1
comparisons and multiplexers in one circuit.

Results are exact over the whole ring with `cmp_bits` = 64 (the default): comparison of x < y is
the sign of x - y, correct whenever |x - y| < 2^63. An engine built with `cmp_bits` = l + 1 is
exact for |x - y| < 2^l ring units (`sign` explains why) at about l/63 of the cost.

Leaks: party 1 sees garbled tables and labels (pseudorandom) and c, which is masked by the
uniform bit m; party 0 sees only the OT message u (pseudorandom). The Beaver openings are uniform.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from sharelearn.core.codec import expect_array, expect_type
from sharelearn.core.errors import CryptoError, ProtocolError
from sharelearn.core.types import U8Array, U64Array
from sharelearn.crypto import circuits, garble
from sharelearn.crypto import ot as otc
from sharelearn.crypto.circuits import Circuit
from sharelearn.crypto.rng import random_bits
from sharelearn.operators.ot import OTReceiver, OTSender, cot_receive_with, cot_send_deferred, receiver_extend

if TYPE_CHECKING:
    from sharelearn.operators.ss_arith import SSOps

__all__ = [
    "CHUNK",
    "argmax",
    "b2a",
    "drelu",
    "garbled_eval",
    "lt",
    "mul_bits",
    "offset_sign_bits",
    "offset_signs",
    "offset_signs_circuit",
    "relu",
    "sign",
    "two_sign_bits",
    "two_signs",
    "two_signs_circuit",
]

CHUNK = 1 << 15  # circuit instances per garbled message (~64 MiB of tables for a 64-bit sign)


def garbled_eval(ops: SSOps, circuit: Circuit, own_bits: U8Array, mask_bits: int) -> U8Array:
    """Evaluate `circuit` on both parties' input bits; return this party's boolean output shares.

    The batch is cut into chunks of `CHUNK` instances; the evaluator sends every chunk's OT message
    first, so the garbler garbles chunk i + 1 while the evaluator evaluates chunk i.

    Args:
        ops: the engine (party 0 garbles, party 1 evaluates).
        circuit: a circuit whose last `mask_bits` garbler inputs XOR-mask its outputs.
        own_bits: this party's input bits (without the mask), (n_inputs, batch).
        mask_bits: number of output mask bits the garbler adds.

    Returns:
        (n_outputs, batch) bits: the mask at party 0, the masked outputs at party 1.
    """
    batch = own_bits.shape[1]
    parts = [np.ascontiguousarray(own_bits[:, i : i + CHUNK]) for i in range(0, batch, CHUNK)]
    if ops.index == 0:
        return np.concatenate([_garbler(ops, circuit, part, mask_bits) for part in parts], axis=1)
    session = ops.ot_session()
    if not isinstance(session, OTReceiver):
        raise CryptoError("internal: party 1 must be the OT receiver")
    started = [receiver_extend(session, part) for part in parts]
    return np.concatenate(
        [_evaluator(ops, circuit, part, t, b) for part, (t, b) in zip(parts, started, strict=True)], axis=1
    )


def _garbler(ops: SSOps, circuit: Circuit, x_bits: U8Array, mask_bits: int) -> U8Array:
    session = ops.ot_session()
    if not isinstance(session, OTSender):
        raise CryptoError("internal: party 0 must be the OT sender")
    tag, batch = ops.tag("gc"), x_bits.shape[1]
    n_e = circuit.evaluator_inputs.size
    mask = random_bits((mask_bits, batch))
    delta = garble.new_delta()
    zero, corrections, ot_batch = cot_send_deferred(session, delta, n_e * batch)
    garbled, keys = garble.garble(
        circuit,
        batch,
        delta=delta,
        evaluator_zero=zero.reshape(n_e, batch, 2),
        tweak_base=(1 << 62) + ot_batch,
    )
    labels = garble.garbler_input_labels(keys, np.concatenate([x_bits, mask]))
    ops.link.send(
        ops.peer, tag, [garbled.tables, garbled.decode_bits, labels, garbled.tweak_base, corrections]
    )
    return mask


def _evaluator(ops: SSOps, circuit: Circuit, x_bits: U8Array, t: U64Array, ot_batch: int) -> U8Array:
    session = ops.ot_session()
    assert isinstance(session, OTReceiver)  # checked by garbled_eval
    tag, batch = ops.tag("gc"), x_bits.shape[1]
    hashed = otc.rot_receiver(t, batch=ot_batch)  # while the garbler garbles
    got = expect_type(ops.link.recv(ops.peer, tag), list, peer=ops.peer, tag=tag)
    if len(got) != 5 or not isinstance(got[3], int):
        raise ProtocolError(f"{ops.peer}: malformed garbled circuit {tag!r}", peer=ops.peer, tag=tag)
    labels_e = cot_receive_with(session, hashed, -1, x_bits.reshape(-1), got[4], tag=tag).reshape(
        circuit.evaluator_inputs.size, batch, 2
    )
    tables = expect_array(got[0], peer=ops.peer, tag=tag, dtype=np.uint64, shape=(circuit.n_and, 2, batch, 2))
    decode_bits = expect_array(
        got[1], peer=ops.peer, tag=tag, dtype=np.uint8, shape=(circuit.outputs.size, batch)
    )
    labels_g = expect_array(
        got[2], peer=ops.peer, tag=tag, dtype=np.uint64, shape=(circuit.garbler_inputs.size, batch, 2)
    )
    garbled = garble.GarbledCircuit(tables, decode_bits, batch, got[3])
    return garble.decode(garbled, garble.evaluate(circuit, garbled, labels_g, labels_e))


def b2a(ops: SSOps, bits: U8Array) -> U64Array:
    """Integer shares of bits XOR-shared between the parties: b = c + m - 2 c m (one Beaver round)."""
    own = bits.astype(np.uint64)
    zero = np.zeros_like(own)
    m_sh, c_sh = (own, zero) if ops.index == 0 else (zero, own)
    cm = ops.mul_ring(m_sh, c_sh)
    out: U64Array = own - np.uint64(2) * cm
    return out


def sign(ops: SSOps, x: U64Array) -> U64Array:
    """Integer shares of [x < 0] (the sign bit of x_0 + x_1).

    With `ops.cmp_bits` = l + 1 < 64 the circuit reads only the low l + 1 bits of each share: for
    |x| < 2^l the bits l..63 of x are all equal (all 0 or all 1), so the sign is bit l of x, and bit
    l of x_0 + x_1 depends only on the low l + 1 bits of the shares (bit l of each plus the carry
    out of bits 0..l-1). The cost drops from 63 to l AND gates and from 64 to l + 1 OTs.
    """
    flat = x.reshape(-1)
    n_bits = ops.cmp_bits
    bits = circuits.u64_to_bits(flat, n_bits)
    out = garbled_eval(ops, circuits.share_sign_circuit(n_bits, masked=True), bits, 1)
    return b2a(ops, out[0]).reshape(x.shape)


@functools.lru_cache(maxsize=16)
def two_signs_circuit(n_bits: int) -> Circuit:
    """Garbler a, b, masks m (2 bits), evaluator c -> (msb(a + c) xor m_0, msb(b + c) xor m_1).

    Two sign tests of values whose evaluator shares coincide (x + u and x + v with public u, v
    added by party 0) share one set of evaluator inputs, so they cost half the OTs.
    """
    bld = circuits.CircuitBuilder()
    a, b, c = bld.garbler_input(n_bits), bld.garbler_input(n_bits), bld.evaluator_input(n_bits)
    top_a = circuits.word_add(bld, a, c)[0][-1]
    top_b = circuits.word_add(bld, b, c)[0][-1]
    mask = bld.garbler_input(2)
    return bld.build([bld.xor(top_a, mask[0]), bld.xor(top_b, mask[1])], f"two_signs{n_bits}m")


def two_sign_bits(ops: SSOps, x_a: U64Array, x_b: U64Array, n_bits: int | None = None) -> U8Array:
    """XOR shares (2, ...) of the bits [x_a < 0] and [x_b < 0] where x_b - x_a is a public constant.

    Party 1's shares of x_a and x_b must be equal (party 0 added the public offsets). The circuit
    reads the low `n_bits` share bits (default `ops.cmp_bits`): exact while |x_a|, |x_b| <
    2^(n_bits - 1) ring units (see `sign`).
    """
    n_bits = ops.cmp_bits if n_bits is None else n_bits
    if not 2 <= n_bits <= 64:
        raise CryptoError(f"two_signs: n_bits must be in 2..64, got {n_bits}")
    if ops.index == 0:
        bits = np.concatenate([circuits.u64_to_bits(v.reshape(-1), n_bits) for v in (x_a, x_b)])
    else:
        if not np.array_equal(x_a, x_b):
            raise CryptoError("two_signs: party 1's shares of both values must be equal")
        bits = circuits.u64_to_bits(x_a.reshape(-1), n_bits)
    out = garbled_eval(ops, two_signs_circuit(n_bits), bits, 2)
    return out.reshape(2, *x_a.shape)


def two_signs(ops: SSOps, x_a: U64Array, x_b: U64Array, n_bits: int | None = None) -> U64Array:
    """Integer shares (2, ...) of [x_a < 0] and [x_b < 0] (`two_sign_bits`, then `b2a`)."""
    return b2a(ops, two_sign_bits(ops, x_a, x_b, n_bits))


@functools.lru_cache(maxsize=16)
def offset_signs_circuit(n_bits: int, offsets: tuple[int, ...]) -> Circuit:
    """Garbler x_0, masks m, evaluator x_1 -> msb(x_0 + x_1 + c_j) xor m_j for public constants c_j.

    One adder converts x to boolean shares (n - 1 AND); each test against a public constant then
    costs one AND per bit above the constant's lowest set bit (the builder folds the rest), so a
    clip at +-B 2^f with a power-of-two B needs about n - f more ANDs per bound instead of a
    second full adder, and the garbler sends one word of input labels instead of one per test.
    """
    if not 2 <= n_bits <= 64:
        raise CryptoError(f"offset_signs_circuit: n_bits must be in 2..64, got {n_bits}")
    bld = circuits.CircuitBuilder()
    x0, x1 = bld.garbler_input(n_bits), bld.evaluator_input(n_bits)
    total, _ = circuits.word_add(bld, x0, x1)
    tops = []
    for c in offsets:
        const = [circuits.ONE if (c >> i) & 1 else circuits.ZERO for i in range(n_bits)]
        tops.append(circuits.word_add(bld, total, const)[0][-1])
    mask = bld.garbler_input(len(offsets))
    outs = [bld.xor(t, m) for t, m in zip(tops, mask, strict=True)]
    return bld.build(outs, f"offset_signs{n_bits}x{len(offsets)}m")


def offset_sign_bits(ops: SSOps, x: U64Array, offsets: tuple[int, ...], n_bits: int | None = None) -> U8Array:
    """XOR shares (len(offsets), ...) of the bits [x + c_j < 0] for public ring integers c_j.

    Exact while |x + c_j| < 2^(n_bits - 1) ring units for every j (n_bits defaults to
    `ops.cmp_bits`; `sign` explains why the low bits suffice). One garbled pass for all c_j.
    """
    n_bits = ops.cmp_bits if n_bits is None else n_bits
    if not 2 <= n_bits <= 64 or not offsets:
        raise CryptoError(f"offset_signs: n_bits must be in 2..64 and offsets non-empty, got {n_bits}")
    ring = 1 << n_bits
    circuit = offset_signs_circuit(n_bits, tuple(int(c) % ring for c in offsets))
    bits = circuits.u64_to_bits(x.reshape(-1), n_bits)
    out = garbled_eval(ops, circuit, bits, len(offsets))
    return out.reshape(len(offsets), *x.shape)


def offset_signs(ops: SSOps, x: U64Array, offsets: tuple[int, ...], n_bits: int | None = None) -> U64Array:
    """Integer shares (len(offsets), ...) of [x + c_j < 0] (`offset_sign_bits`, then `b2a`)."""
    return b2a(ops, offset_sign_bits(ops, x, offsets, n_bits))


def mul_bits(ops: SSOps, v: U64Array, bits: U8Array) -> U64Array:
    """Shares of v * b for arithmetic shares v and XOR-shared bits b of the same shape, in one round.

    With b = c xor m (party 1 holds c, party 0 holds m) and v = v_0 + v_1:
    v b = v_0 m + v_1 c + c (v_0 (1 - 2m)) + m (v_1 (1 - 2c)); the first two terms are local and
    the last two are products of a value known to party 0 and one known to party 1, made by one
    Beaver multiplication of shape (2, *v.shape). This replaces `b2a` followed by a
    multiplication (two rounds) with one round and the same triple volume.
    """
    if bits.shape != v.shape:
        raise CryptoError(f"mul_bits: bits {bits.shape} and values {v.shape} differ in shape")
    own = bits.astype(np.uint64)
    flip = np.uint64(1) - np.uint64(2) * own  # 1 - 2 bit, in the ring
    zero = np.zeros((2, *v.shape), dtype=np.uint64)
    if ops.index == 0:
        cross = ops.mul_ring(np.stack([v * flip, own]), zero)
    else:
        cross = ops.mul_ring(zero, np.stack([own, v * flip]))
    out: U64Array = v * own + cross[0] + cross[1]
    return out


def lt(ops: SSOps, x: U64Array, y: U64Array) -> U64Array:
    """Integer shares of [x < y]."""
    return sign(ops, ops.sub(x, y))


def drelu(ops: SSOps, x: U64Array) -> U64Array:
    """Integer shares of [x >= 0] = 1 - sign(x)."""
    return ops.add_public_ring(ops.neg(sign(ops, x)), np.array(1, dtype=np.uint64))


def relu(ops: SSOps, x: U64Array) -> U64Array:
    """max(x, 0) = x [x >= 0], exact in the ring."""
    return ops.mul_ring(x, drelu(ops, x))


def argmax(ops: SSOps, x: U64Array) -> U64Array:
    """Integer shares of argmax along the last axis (first index on ties), via one garbled tournament."""
    k = x.shape[-1]
    if k < 2:
        return np.zeros(x.shape[:-1], dtype=np.uint64)
    rows = x.reshape(-1, k)
    bits = np.concatenate([circuits.u64_to_bits(np.ascontiguousarray(rows[:, i]), 64) for i in range(k)])
    circuit = circuits.share_argmax_circuit(k, 64, masked=True)
    n_idx = circuit.outputs.size
    out = garbled_eval(ops, circuit, bits, n_idx)
    index = np.zeros(rows.shape[0], dtype=np.uint64)
    arith = b2a(ops, out)
    for j in range(n_idx):  # a handful of index bits
        index += arith[j] << np.uint64(j)
    return index.reshape(x.shape[:-1])
