from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import CryptoError
from sharelearn.crypto import circuits as C
from sharelearn.crypto import garble as G
from sharelearn.crypto import ot
from sharelearn.crypto.rng import random_bits, random_u64

EDGES = [0, 1, -1, 2, -2, 2**63 - 1, -(2**63), 2**62, -(2**62), 12345, -12345]


def _values(n: int) -> np.ndarray:
    x = random_u64(n)
    x[: len(EDGES)] = np.array(EDGES, dtype=np.int64).view(np.uint64)
    return x


def _signed(x: np.ndarray) -> np.ndarray:
    return x.view(np.int64)


def _run_garbled(circuit: C.Circuit, gbits: np.ndarray, ebits: np.ndarray) -> np.ndarray:
    batch = gbits.shape[1]
    gc, keys = G.garble(circuit, batch)
    zero, one = G.evaluator_label_pairs(keys)
    elabels = np.where(ebits[..., None] == 1, one, zero)  # stands in for the OT
    out = G.evaluate(circuit, gc, G.garbler_input_labels(keys, gbits), elabels)
    return G.decode(gc, out)


def _both(circuit: C.Circuit, gbits: np.ndarray, ebits: np.ndarray) -> np.ndarray:
    plain = C.evaluate_plain(circuit, gbits, ebits)
    garbled = _run_garbled(circuit, gbits, ebits)
    assert np.array_equal(plain, garbled)
    return plain


def test_adder_circuit() -> None:
    a, b = _values(300), _values(300)[::-1].copy()

    out = _both(C.adder_circuit(64), C.u64_to_bits(a), C.u64_to_bits(b))

    assert np.array_equal(C.bits_to_u64(out), a + b)


@pytest.mark.parametrize("signed", [True, False])
def test_lt_circuit(signed: bool) -> None:
    a, b = _values(400), _values(400)[::-1].copy()
    b[:20] = a[:20]  # equal pairs

    out = _both(C.lt_circuit(64, signed), C.u64_to_bits(a), C.u64_to_bits(b))

    expect = (_signed(a) < _signed(b)) if signed else (a < b)
    assert np.array_equal(out[0].astype(bool), expect)


def test_eq_circuit() -> None:
    a, b = _values(200), _values(200)
    b[::2] = a[::2]

    out = _both(C.eq_circuit(64), C.u64_to_bits(a), C.u64_to_bits(b))

    assert np.array_equal(out[0].astype(bool), a == b)


def test_share_sign_on_edge_cases() -> None:
    x = _values(500)
    x0 = random_u64(500)
    x1 = x - x0

    out = _both(C.share_sign_circuit(64), C.u64_to_bits(x0), C.u64_to_bits(x1))

    assert np.array_equal(out[0].astype(bool), _signed(x) < 0)


def test_masked_sign_gives_boolean_shares() -> None:
    x = _values(300)
    x0 = random_u64(300)
    mask = random_bits((1, 300))

    out = _both(
        C.share_sign_circuit(64, masked=True),
        np.concatenate([C.u64_to_bits(x0), mask]),
        C.u64_to_bits(x - x0),
    )

    assert np.array_equal((out ^ mask)[0].astype(bool), _signed(x) < 0)


@pytest.mark.parametrize("masked", [False, True])
def test_share_relu_exact_on_edges(masked: bool) -> None:
    x = _values(500)
    x0, r = random_u64(500), random_u64(500)
    gbits = np.concatenate([C.u64_to_bits(x0), C.u64_to_bits(r)]) if masked else C.u64_to_bits(x0)

    out = _both(C.share_relu_circuit(64, masked=masked), gbits, C.u64_to_bits(x - x0))

    y = C.bits_to_u64(out) + (r if masked else np.uint64(0))
    assert np.array_equal(_signed(y), np.maximum(_signed(x), 0))


def test_share_max_and_argmax() -> None:
    k, n = 5, 200
    vals = np.stack([_values(n) for _ in range(k)])
    vals[:, 0] = 7  # all tied: argmax is the first index
    shares0 = random_u64((k, n))
    shares1 = vals - shares0
    r = random_u64(n)
    gbits = np.concatenate([C.u64_to_bits(s) for s in shares0])
    ebits = np.concatenate([C.u64_to_bits(s) for s in shares1])

    mx = _both(C.share_max_circuit(k, 64), np.concatenate([gbits, C.u64_to_bits(r)]), ebits)
    am = _both(C.share_argmax_circuit(k, 64, masked=False), gbits, ebits)

    signed = vals.view(np.int64)
    assert np.array_equal(_signed(C.bits_to_u64(mx) + r), signed.max(axis=0))
    assert np.array_equal(C.bits_to_u64(am).astype(np.int64), signed.argmax(axis=0))


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 16), st.integers(1, 40))
def test_garbled_equals_plain_on_small_widths(bits: int, batch: int) -> None:
    circuit = C.share_relu_circuit(bits, masked=True)
    gbits = random_bits((circuit.garbler_inputs.size, batch))
    ebits = random_bits((circuit.evaluator_inputs.size, batch))

    _both(circuit, gbits, ebits)


def test_full_pipeline_with_correlated_ot() -> None:
    circuit = C.share_relu_circuit(64, masked=True)
    n = 256
    x = _values(n)
    x0, r = random_u64(n), random_u64(n)
    ebits = C.u64_to_bits(x - x0)
    s = ot.iknp_sender_choose()  # garbler = OT sender
    state, big_s = ot.base_sender_setup()  # evaluator = OT receiver = base sender
    rstate, msgs = ot.base_receiver_choose(big_s, s)
    k0, k1 = ot.base_sender_keys(state, msgs)
    choices = ebits.reshape(-1)

    u, t = ot.iknp_receiver_extend(choices, k0, k1)
    q = ot.iknp_sender_extend(s, ot.base_receiver_keys(rstate), u, choices.size)
    delta = G.new_delta()
    zero, corr = ot.cot_sender(q, s, delta)
    gc, keys = G.garble(circuit, n, delta=delta, evaluator_zero=zero.reshape(64, n, 2))
    elabels = ot.cot_receiver(t, choices, corr).reshape(64, n, 2)
    gl = G.garbler_input_labels(keys, np.concatenate([C.u64_to_bits(x0), C.u64_to_bits(r)]))
    y = C.bits_to_u64(G.decode(gc, G.evaluate(circuit, gc, gl, elabels)))

    assert np.array_equal(_signed(y + r), np.maximum(_signed(x), 0))


def test_wrong_labels_decode_to_garbage() -> None:
    circuit = C.share_sign_circuit(64)
    n = 200
    gc, keys = G.garble(circuit, n)
    gl = G.garbler_input_labels(keys, np.zeros((64, n), dtype=np.uint8))
    el = random_u64((64, n, 2))  # not labels of this garbling

    bits = G.decode(gc, G.evaluate(circuit, gc, gl, el))

    assert 0.3 < bits.mean() < 0.7


def test_tables_have_two_ciphertexts_per_and_gate() -> None:
    circuit = C.share_relu_circuit(64, masked=True)

    gc, _ = G.garble(circuit, 3)

    assert gc.tables.shape == (circuit.n_and, 2, 3, 2)
    assert circuit.n_and == 63 + 63 + 63
    assert "Delta" not in repr(gc)


def test_circuit_shapes_are_checked() -> None:
    circuit = C.share_sign_circuit(64)
    gc, keys = G.garble(circuit, 4)

    with pytest.raises(CryptoError, match="labels"):
        G.evaluate(circuit, gc, keys.garbler_zero[:, :3], keys.evaluator_zero)
    with pytest.raises(CryptoError, match="garbler bits"):
        C.evaluate_plain(circuit, np.zeros((3, 4)), np.zeros((64, 4)))
    with pytest.raises(CryptoError, match="Delta"):
        G.garble(circuit, 4, delta=np.zeros(2, dtype=np.uint64))


def test_bits_round_trip() -> None:
    x = _values(100)

    assert np.array_equal(C.bits_to_u64(C.u64_to_bits(x)), x)
    assert C.u64_to_bits(np.array([5], dtype=np.uint64), 4)[:, 0].tolist() == [1, 0, 1, 0]
