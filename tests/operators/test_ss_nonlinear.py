"""Sigmoid, exp and reciprocal on shares: against the plain engine and the documented bounds."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from mpc_ops_roles import DEALER, P0, P1, dealer_role, party_role  # type: ignore[import-not-found]

from sharelearn.core.errors import ConfigError
from sharelearn.operators import ops, ss_nonlinear
from sharelearn.operators.plain import PlainOps
from sharelearn.testing.roles import run_roles

pytestmark = pytest.mark.timeout(120)

PLAIN = PlainOps()
FRAC_BITS = 16


def _run(op: str, x: np.ndarray, cmp_bits: int = 64) -> Any:
    roles: dict[str, Any] = {
        p: partial(party_role, index=i, op=op, x=x, y=None, shape_x=x.shape, shape_y=(), cmp_bits=cmp_bits)
        for i, p in enumerate((P0, P1))
    }
    roles[DEALER] = dealer_role
    return run_roles(roles, timeout=90)[P0]


def _exact(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(x / 2.0))


@pytest.mark.parametrize("method", ops.SIGMOID_METHODS)
def test_plain_approximation_stays_within_its_documented_bound(method: str) -> None:
    spec = ops.sigmoid_spec(method)
    lim = min(spec.domain, 50.0)
    x = np.linspace(-lim, lim, 200_001)

    err = np.abs(ops.sigmoid_approx(x, method) - _exact(x))

    assert err.max() <= spec.max_error


@pytest.mark.parametrize("method", ops.SIGMOID_METHODS)
def test_ss_sigmoid_matches_plain_within_fixed_point_slack(method: str) -> None:
    spec = ops.sigmoid_spec(method)
    rng = np.random.default_rng(11)
    lim = min(spec.domain, 30.0)
    x = np.concatenate([rng.uniform(-lim, lim, 300), [0.0, lim, -lim, 1.0, -1.0]])

    got = _run(f"sigmoid_{method}", x)

    slack = ops.fixed_point_slack(FRAC_BITS, 8)
    assert np.abs(got - PLAIN.sigmoid(x, method)).max() <= slack
    assert np.abs(got - _exact(x)).max() <= spec.max_error + slack


def test_clipped_minimax_is_bounded_far_outside_the_polynomial_domain() -> None:
    x = np.array([-1000.0, -40.0, -8.5, 8.5, 40.0, 1000.0])

    got = _run("sigmoid_minimax", x)

    assert np.abs(got - _exact(x)).max() <= ops.sigmoid_spec("minimax").max_error + 1e-3


# ss_lr's engine: logits bounded by 2^12 reals (cmp_bits = 16 + 13); the clip reads 24 share bits.
NARROW = FRAC_BITS + 13


def test_narrow_clip_reads_few_bits() -> None:
    assert ss_nonlinear.clip_circuit_bits(NARROW, FRAC_BITS, ops.MINIMAX_RANGE) == (6, 24)
    assert ss_nonlinear.clip_circuit_bits(64, FRAC_BITS, ops.MINIMAX_RANGE) == (0, 64)


def test_narrow_clipped_minimax_holds_its_bound_up_to_the_domain_edge() -> None:
    rng = np.random.default_rng(5)
    edge = 2.0 ** (NARROW - 1 - FRAC_BITS) - 1.0  # largest magnitude the engine's domain allows
    near = np.concatenate([b + rng.uniform(-0.05, 0.05, 200) for b in (8.0, -8.0)])
    x = np.concatenate(
        [near, rng.uniform(-30, 30, 200), [0.0, 1.0, -1.0, 8.0, -8.0, 8 + 2**-16, -8 - 2**-16, edge, -edge]]
    )

    got = _run("sigmoid_minimax", x, cmp_bits=NARROW)

    slack = ops.fixed_point_slack(FRAC_BITS, 8)
    assert np.abs(got - _exact(x)).max() <= ops.sigmoid_spec("minimax").max_error + slack
    far = np.abs(np.abs(x) - 8.0) > 2.0**-10  # away from the decision band the clip is exact
    assert np.abs(got - PLAIN.sigmoid(x, "minimax"))[far].max() <= slack


def test_exp_relative_error_within_bound_on_its_range() -> None:
    x = np.linspace(*ops.EXP_RANGE, 241)

    got = _run("exp", x)

    assert np.abs(ops.exp_approx(x) / np.exp(x) - 1).max() <= ops.EXP_REL_BOUND
    assert np.abs(got / np.exp(x) - 1).max() <= ops.EXP_REL_BOUND + 0.01


def test_reciprocal_relative_error_within_bound_on_its_range() -> None:
    lo, hi = ops.RECIPROCAL_RANGE
    x = np.geomspace(lo, hi, 200)

    got = _run("reciprocal", x)

    assert np.abs(ops.reciprocal_approx(x) * x - 1).max() <= ops.RECIPROCAL_REL_BOUND
    assert np.abs(got * x - 1).max() <= ops.RECIPROCAL_REL_BOUND + 0.01


def test_unknown_sigmoid_method_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="piecewise, taylor, minimax"):
        ops.sigmoid_spec("cubic")
