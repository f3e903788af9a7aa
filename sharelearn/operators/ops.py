"""The `SecureOps` interface every engine implements, and the documented nonlinear approximations.

Algorithms program against `SecureOps` (share, reveal, add, mul, matmul, truncate, sigmoid, exp,
reciprocal, lt, relu, argmax). Engines:

* `plain.PlainOps`: float64 in one process; the test oracle and the source of V_SUM.
* `ss_arith.SSOps` (+ `ss_nonlinear`, `gc_bridge`): two-party additive sharing over Z_2^64 with
  Beaver triples and garbled circuits.

Approximations (the error bounds are measured on a 20,001-point grid of the domain, rounded up,
and checked again by the tests). Both engines evaluate the *same* approximation; the `ss` engine
adds fixed-point error on top (`fixed_point_slack`).

=================  ================================================  ==========  =================
method             formula                                            domain      max |f - sigmoid|
=================  ================================================  ==========  =================
piecewise          clip(0.18 x + 0.5, 0, 1) (two garbled ReLUs)       all reals   0.0586
taylor             1/2 + x/4 - x^3/48 + x^5/480 (Maclaurin, deg 5)    |x| <= 2    0.0193
minimax            P(clip(x, -8, 8)), clip by two garbled ReLUs        all reals   0.0092
minimax_unclipped  P(x): odd degree-9 minimax polynomial on [-8, 8]   |x| <= 8    0.0088
=================  ================================================  ==========  =================

Outside its domain a polynomial's error is unbounded (it diverges, and a logistic regression
trained with it diverges too as soon as a few logits leave the domain: default_credit does).
`minimax` pays two garbled sign tests per element for a bound on all reals (0.0088 inside, plus
at most 1 - sigmoid(8) = 0.00034 outside); `minimax_unclipped` and `taylor` are pure Beaver
arithmetic and much faster, for inputs known to stay in range.

`exp(x)` = (1 + x / 2^8)^(2^8) (eight squarings; relative error about x^2 / 2^9: <= 0.032 for |x| <= 4).
`reciprocal(x)` = Newton's iteration y <- y (2 - x y) from y_0 = 3 exp(1/2 - x) + 0.003 (CrypTen),
ten steps; relative error <= 0.01 for 0.1 <= x <= 50.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import numpy as np

from sharelearn.core.errors import ConfigError
from sharelearn.core.types import F64Array

__all__ = [
    "EXP_ITERATIONS",
    "EXP_RANGE",
    "EXP_REL_BOUND",
    "MINIMAX_COEFFS",
    "MINIMAX_RANGE",
    "PIECEWISE_SLOPE",
    "RECIPROCAL_ITERATIONS",
    "RECIPROCAL_RANGE",
    "RECIPROCAL_REL_BOUND",
    "SIGMOID_METHODS",
    "TAYLOR_COEFFS",
    "TAYLOR_RANGE",
    "SecureOps",
    "SigmoidMethod",
    "SigmoidSpec",
    "exp_approx",
    "fixed_point_slack",
    "reciprocal_approx",
    "sigmoid_approx",
    "sigmoid_spec",
]

SigmoidMethod = Literal["piecewise", "taylor", "minimax", "minimax_unclipped"]
SIGMOID_METHODS: tuple[str, ...] = ("piecewise", "taylor", "minimax", "minimax_unclipped")

# clip(a x + 1/2, 0, 1): a = 0.18 minimises the sup error over the reals on a 0.01 grid of slopes.
PIECEWISE_SLOPE = 0.18
TAYLOR_RANGE = 2.0
# Coefficients of x, x^3, x^5 of the Maclaurin series of sigmoid(x) - 1/2.
TAYLOR_COEFFS: tuple[float, ...] = (1 / 4, -1 / 48, 1 / 480)
MINIMAX_RANGE = 8.0
# Odd minimax polynomial for sigmoid(x) - 1/2 on [-8, 8] (Lawson's iteratively reweighted least
# squares to equioscillation), coefficients of u, u^3, ..., u^9 in the scaled variable u = x / 8,
# so that every coefficient is O(1) and survives 16-bit fixed point.
MINIMAX_COEFFS: tuple[float, ...] = tuple(
    c * MINIMAX_RANGE**k
    for c, k in zip(
        (2.34142894e-01, -1.20254777e-02, 3.93529713e-04, -6.17038007e-06, 3.60411907e-08),
        (1, 3, 5, 7, 9),
        strict=True,
    )
)
EXP_ITERATIONS = 8
EXP_RANGE = (-4.0, 4.0)
EXP_REL_BOUND = 0.032  # on EXP_RANGE
RECIPROCAL_ITERATIONS = 10
RECIPROCAL_RANGE = (0.1, 50.0)
RECIPROCAL_REL_BOUND = 0.01


@dataclass(frozen=True, slots=True)
class SigmoidSpec:
    """A sigmoid approximation: its name, the domain its bound holds on, and the bound."""

    method: str
    domain: float
    max_error: float


_SPECS = {
    "piecewise": SigmoidSpec("piecewise", float("inf"), 0.0586),
    "taylor": SigmoidSpec("taylor", TAYLOR_RANGE, 0.0193),
    "minimax": SigmoidSpec("minimax", float("inf"), 0.0092),
    "minimax_unclipped": SigmoidSpec("minimax_unclipped", MINIMAX_RANGE, 0.0088),
}


def sigmoid_spec(method: str) -> SigmoidSpec:
    """The documented domain and error bound of a sigmoid approximation.

    Raises:
        ConfigError: an unknown method name.
    """
    try:
        return _SPECS[method]
    except KeyError:
        raise ConfigError(f"sigmoid must be one of {', '.join(SIGMOID_METHODS)}, got {method!r}") from None


def fixed_point_slack(frac_bits: int, operations: int) -> float:
    """Error the fixed-point `ss` engine may add over `operations` truncations: ops * 2^-(f-2)."""
    return float(operations) * 2.0 ** -(frac_bits - 2)


def sigmoid_approx(x: F64Array, method: str) -> F64Array:
    """Evaluate an approximation in float64: what both engines compute (the plain engine exactly)."""
    sigmoid_spec(method)
    x = np.asarray(x, dtype=np.float64)
    if method == "piecewise":
        return np.clip(PIECEWISE_SLOPE * x + 0.5, 0.0, 1.0)
    if method == "taylor":
        c1, c3, c5 = TAYLOR_COEFFS
        y = x * x
        return 0.5 + x * (c1 + y * (c3 + y * c5))
    if method == "minimax":
        x = np.clip(x, -MINIMAX_RANGE, MINIMAX_RANGE)
    u = x / MINIMAX_RANGE
    y = u * u
    acc = np.full_like(u, MINIMAX_COEFFS[-1])
    for c in reversed(MINIMAX_COEFFS[:-1]):
        acc = acc * y + c
    return 0.5 + u * acc


def exp_approx(x: F64Array) -> F64Array:
    """(1 + x / 2^n)^(2^n) with n = EXP_ITERATIONS squarings."""
    y = 1.0 + np.asarray(x, dtype=np.float64) / 2.0**EXP_ITERATIONS
    for _ in range(EXP_ITERATIONS):
        y = y * y
    return y


def reciprocal_approx(x: F64Array) -> F64Array:
    """Newton's iteration for 1/x from CrypTen's initial guess (valid on RECIPROCAL_RANGE)."""
    x = np.asarray(x, dtype=np.float64)
    y = 3.0 * exp_approx(0.5 - x) + 0.003
    for _ in range(RECIPROCAL_ITERATIONS):
        y = y * (2.0 - x * y)
    return y


T = TypeVar("T")


class SecureOps(Protocol[T]):
    """Operations on secret values of type T (float arrays for `plain`, uint64 shares for `ss`).

    Values are real numbers in fixed point unless a method says "integer"; comparison results
    (`lt`, `drelu`) are integer 0/1 values, and `argmax` returns integer indices.
    """

    def share(self, x: F64Array | None, *, owner: int, shape: tuple[int, ...]) -> T:
        """Input `x` held by party `owner` (other parties pass None and the shape)."""
        ...

    def reveal(self, x: T, *, to: int | None = None) -> F64Array | None:
        """Open a real value to party `to` (None: to every party); others get None."""
        ...

    def add(self, x: T, y: T) -> T: ...

    def sub(self, x: T, y: T) -> T: ...

    def add_public(self, x: T, c: float | F64Array) -> T: ...

    def mul_public(self, x: T, c: float | F64Array) -> T: ...

    def mul(self, x: T, y: T) -> T: ...

    def matmul(self, x: T, y: T) -> T: ...

    def sigmoid(self, x: T, method: str = "minimax") -> T: ...

    def exp(self, x: T) -> T: ...

    def reciprocal(self, x: T) -> T: ...

    def lt(self, x: T, y: T) -> T: ...

    def relu(self, x: T) -> T: ...

    def argmax(self, x: T) -> T: ...
