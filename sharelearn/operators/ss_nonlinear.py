"""Nonlinear functions of the `ss` engine: sigmoid, exp and reciprocal from Beaver multiplications.

The approximations, their domains and error bounds are documented in `operators.ops` (the plain
engine evaluates the same formulas in float64). Rounds per call:

* sigmoid `minimax_unclipped`: u = x / 8 (local), y = u^2, three Horner steps in y, then
  u * (...): 5 rounds. `minimax` first clips x to [-8, 8]: the two sign tests [x - 8 < 0] and
  [x + 8 < 0] share one garbled pass (one set of OTs), then one Beaver round multiplies the
  XOR-shared bits into the clip (no separate B2A round): 1 garbled pass + 6 rounds. A narrow
  engine (`cmp_bits` < 64) tests the logit at 2^-10 resolution on fewer share bits with one
  adder and two tests against public constants (`_clip` states the bound).
* sigmoid `taylor`: y = x^2, one Horner step, x * (...): 3 rounds.
* sigmoid `piecewise`: clip(a x + 1/2, 0, 1) = ReLU(t) - ReLU(t - 1) with garbled sign tests
  (`gc_bridge`): 2 garbled evaluations + 2 Beaver rounds, run on both halves at once.
* exp: 8 squarings, 8 rounds. reciprocal: exp (8) + 10 Newton steps of 2 rounds: 28 rounds.

Leaks: only the Beaver openings (uniform) and garbled-circuit messages (see `gc_bridge`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sharelearn.core.types import U64Array
from sharelearn.operators import gc_bridge, ops

if TYPE_CHECKING:
    from sharelearn.operators.ss_arith import SSOps

__all__ = ["CLIP_FRAC_BITS", "clip_circuit_bits", "exp", "reciprocal", "sigmoid"]


def _horner(engine: SSOps, y: U64Array, coeffs: tuple[float, ...]) -> U64Array:
    """c_0 + y (c_1 + y (c_2 + ...)) with public coefficients; the innermost step is local."""
    acc = engine.add_public(engine.mul_public(y, coeffs[-1]), coeffs[-2])
    for c in reversed(coeffs[:-2]):
        acc = engine.add_public(engine.mul(acc, y), c)
    return acc


CLIP_FRAC_BITS = 10  # fractional bits of the logit the clip's garbled decision reads


def clip_circuit_bits(cmp_bits: int, frac_bits: int, bound: float) -> tuple[int, int]:
    """(k, m): the clip truncates x by k bits and tests signs on m share bits (see `_clip`)."""
    if cmp_bits >= 64 or frac_bits <= CLIP_FRAC_BITS:
        return 0, cmp_bits
    k = frac_bits - CLIP_FRAC_BITS
    t_bits = round(bound * 2**CLIP_FRAC_BITS).bit_length()
    return k, min(64, max(cmp_bits - k, t_bits + 1) + 1)


def _clip(engine: SSOps, x: U64Array, bound: float) -> U64Array:
    """clip(x, -B, B) = x - (x - B) [x - B >= 0] - (x + B) [x + B < 0]: one garbled pass, one round.

    The two sign bits come out of one garbled circuit as XOR shares and are multiplied into
    x -+ B without a separate B2A round (`gc_bridge.mul_bits`). On the whole ring the circuit
    adds the shares of x - B and of x + B (`gc_bridge.two_sign_bits`, 2 x 63 AND); a narrow
    engine converts the truncated x with one adder and tests it against the public constants
    -+B 2^10 (`gc_bridge.offset_sign_bits`: 23 + 18 AND on 24 bits).

    Exact decisions on the whole ring when `engine.cmp_bits` is 64. With a narrower engine
    (cmp_bits = c < 64: values satisfy |x| < 2^(c - 1) ring units) the decisions read x at
    `CLIP_FRAC_BITS` = 10 fractional bits: party-local truncation by k = f - 10 bits gives x_t
    with x_t - x / 2^k in (-1, 1] (except with probability 2^(c - 64), `additive.truncate_share`),
    and the two sign tests of x_t -+ B 2^10 need only m = max(c - k, bitlen(B 2^10) + 1) + 1
    share bits (`clip_circuit_bits`; 24 instead of 29 for c = 29, f = 16). A decision can
    differ from the exact one only where |x -+ B| < 2^-10; there both candidates (x and -+B)
    are within 2^-10 of each other, so the clipped value moves by less than 2^-10 and the
    `minimax` polynomial (slope about 0.11 at +-8) by less than 1.1e-4, inside the gap between
    the clipped bound (0.0092) and the polynomial's own (0.0088). The multiplications use the
    full-precision x.
    """
    lo, hi = engine.add_public(x, -bound), engine.add_public(x, bound)
    k, m = clip_circuit_bits(engine.cmp_bits, engine.fixed.frac_bits, bound)
    if k:
        t = round(bound * 2**CLIP_FRAC_BITS)
        bits = gc_bridge.offset_sign_bits(engine, engine.truncate(x, k), (-t, t), m)
    else:  # on the whole ring two adders (126 AND) beat one adder and two constant tests (151)
        bits = gc_bridge.two_sign_bits(engine, lo, hi, m)
    # x - lo (1 - s_0) - hi s_1 = (x - lo) + lo s_0 - hi s_1; both products in one round
    r = gc_bridge.mul_bits(engine, np.stack([lo, hi]), bits)
    return engine.sub(engine.add(engine.sub(x, lo), r[0]), r[1])


def sigmoid(engine: SSOps, x: U64Array, method: str = "minimax") -> U64Array:
    """Approximate sigmoid(x) on shares with `method` (see `ops.sigmoid_spec` for the bounds)."""
    ops.sigmoid_spec(method)
    if method == "piecewise":
        t = engine.add_public(engine.mul_public(x, ops.PIECEWISE_SLOPE), 0.5)
        both = np.stack([t, engine.add_public(t, -1.0)])
        r = gc_bridge.relu(engine, both)
        return engine.sub(r[0], r[1])
    if method == "taylor":
        y = engine.mul(x, x)
        return engine.add_public(engine.mul(x, _horner(engine, y, ops.TAYLOR_COEFFS)), 0.5)
    if method == "minimax":
        x = _clip(engine, x, ops.MINIMAX_RANGE)
    u = engine.mul_public(x, 1.0 / ops.MINIMAX_RANGE)
    y = engine.mul(u, u)
    return engine.add_public(engine.mul(u, _horner(engine, y, ops.MINIMAX_COEFFS)), 0.5)


def exp(engine: SSOps, x: U64Array) -> U64Array:
    """(1 + x / 2^8)^(2^8) by eight squarings."""
    y = engine.add_public(engine.mul_public(x, 2.0**-ops.EXP_ITERATIONS), 1.0)
    for _ in range(ops.EXP_ITERATIONS):
        y = engine.mul(y, y)
    return y


def reciprocal(engine: SSOps, x: U64Array) -> U64Array:
    """1/x by Newton's iteration y <- y (2 - x y) from y_0 = 3 exp(1/2 - x) + 0.003."""
    y = engine.add_public(engine.mul_public(exp(engine, engine.add_public(engine.neg(x), 0.5)), 3.0), 0.003)
    for _ in range(ops.RECIPROCAL_ITERATIONS):
        xy = engine.mul(x, y)
        y = engine.mul(y, engine.add_public(engine.neg(xy), 2.0))
    return y
