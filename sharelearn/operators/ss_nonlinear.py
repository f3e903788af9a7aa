"""Nonlinear functions of the `ss` engine: sigmoid, exp and reciprocal from Beaver multiplications.

The approximations, their domains and error bounds are documented in `operators.ops` (the plain
engine evaluates the same formulas in float64). Rounds per call:

* sigmoid `minimax_unclipped`: u = x / 8 (local), y = u^2, three Horner steps in y, then
  u * (...): 5 rounds. `minimax` first clips x to [-8, 8]: the two sign tests [x - 8 < 0] and
  [x + 8 < 0] share one garbled pass (one set of OTs), then one Beaver round makes the clip.
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

__all__ = ["exp", "reciprocal", "sigmoid"]


def _horner(engine: SSOps, y: U64Array, coeffs: tuple[float, ...]) -> U64Array:
    """c_0 + y (c_1 + y (c_2 + ...)) with public coefficients; the innermost step is local."""
    acc = engine.add_public(engine.mul_public(y, coeffs[-1]), coeffs[-2])
    for c in reversed(coeffs[:-2]):
        acc = engine.add_public(engine.mul(acc, y), c)
    return acc


def _clip(engine: SSOps, x: U64Array, bound: float) -> U64Array:
    """clip(x, -B, B) = x - (x - B) [x - B >= 0] - (x + B) [x + B < 0]: one garbled pass, one mul."""
    lo, hi = engine.add_public(x, -bound), engine.add_public(x, bound)
    s = gc_bridge.two_signs(engine, lo, hi)
    keep_hi = engine.add_public_ring(engine.neg(s[0]), np.array(1, dtype=np.uint64))
    r = engine.mul_ring(np.stack([lo, hi]), np.stack([keep_hi, s[1]]))
    return engine.sub(engine.sub(x, r[0]), r[1])


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
