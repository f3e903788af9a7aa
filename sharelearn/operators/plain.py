"""The plaintext engine: every `SecureOps` operation in float64, in one process.

It is the oracle the `ss` engine is tested against, and the centralised twin of an MPC algorithm
(V_SUM). Nonlinear functions use the same approximations as the `ss` engine (`ops.sigmoid_approx`
etc.), so a test compares like with like and checks the approximation against the exact function
separately. Nothing is hidden: `share` and `reveal` return their input.
"""

from __future__ import annotations

import numpy as np

from sharelearn.core.errors import ConfigError
from sharelearn.core.types import F64Array
from sharelearn.operators import ops

__all__ = ["PlainOps"]


class PlainOps:
    """`SecureOps` over plain float64 arrays."""

    def share(self, x: F64Array | None, *, owner: int = 0, shape: tuple[int, ...] = ()) -> F64Array:
        """Return `x` itself (it must be given)."""
        if x is None:
            raise ConfigError(f"the plain engine needs the value of party {owner}'s input")
        return np.asarray(x, dtype=np.float64)

    def reveal(self, x: F64Array, *, to: int | None = None) -> F64Array:
        """Return `x` itself."""
        return np.asarray(x, dtype=np.float64)

    def add(self, x: F64Array, y: F64Array) -> F64Array:
        return x + y

    def sub(self, x: F64Array, y: F64Array) -> F64Array:
        return x - y

    def add_public(self, x: F64Array, c: float | F64Array) -> F64Array:
        return x + np.asarray(c, dtype=np.float64)

    def mul_public(self, x: F64Array, c: float | F64Array) -> F64Array:
        return x * np.asarray(c, dtype=np.float64)

    def mul(self, x: F64Array, y: F64Array) -> F64Array:
        return x * y

    def matmul(self, x: F64Array, y: F64Array) -> F64Array:
        out: F64Array = np.matmul(x, y)
        return out

    def sigmoid(self, x: F64Array, method: str = "minimax") -> F64Array:
        return ops.sigmoid_approx(x, method)

    def exp(self, x: F64Array) -> F64Array:
        return ops.exp_approx(x)

    def reciprocal(self, x: F64Array) -> F64Array:
        return ops.reciprocal_approx(x)

    def lt(self, x: F64Array, y: F64Array) -> F64Array:
        """1.0 where x < y, else 0.0."""
        return (np.asarray(x) < np.asarray(y)).astype(np.float64)

    def relu(self, x: F64Array) -> F64Array:
        return np.maximum(x, 0.0)

    def argmax(self, x: F64Array) -> F64Array:
        """Index of the maximum along the last axis (first on ties), as float64."""
        out: F64Array = np.argmax(x, axis=-1).astype(np.float64)
        return out
