from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.crypto.fixedpoint import FixedPoint


@pytest.mark.parametrize("bits", [0, 32, -1])
def test_frac_bits_out_of_range_is_config_error(bits: int) -> None:
    with pytest.raises(ConfigError, match="frac_bits"):
        FixedPoint(bits)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 31),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=32),
)
def test_round_trip_error_at_most_half_resolution(frac_bits: int, xs: list[float]) -> None:
    fp = FixedPoint(frac_bits)
    x = np.array(xs)

    back = fp.decode(fp.encode(x))

    assert np.all(np.abs(back - x) <= fp.resolution / 2)


def test_negative_values_are_twos_complement() -> None:
    fp = FixedPoint(16)

    u = fp.encode([-1.0, 1.0, 0.0])

    assert u.dtype == np.uint64
    assert int(u[0]) == 2**64 - 2**16 and int(u[1]) == 2**16 and int(u[2]) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 2.0**47, -(2.0**47), 1e30])
def test_overflow_and_non_finite_raise(bad: float) -> None:
    with pytest.raises(CryptoError, match="overflow"):
        FixedPoint(16).encode([0.0, bad])


def test_largest_encodable_value_round_trips() -> None:
    fp = FixedPoint(16)
    x = np.array([2.0**47 - 1.0, -(2.0**47) + 1.0])

    assert np.array_equal(fp.decode(fp.encode(x)), x)


def test_decode_bound_makes_wrapped_values_loud() -> None:
    fp = FixedPoint(16)
    u = fp.encode([1.0, 3.0])

    with pytest.raises(CryptoError, match="bound"):
        fp.decode(u, bound=2.0)


@settings(max_examples=100, deadline=None)
@given(st.floats(-1000, 1000), st.floats(-1000, 1000))
def test_plain_multiply_then_truncate(a: float, b: float) -> None:
    fp = FixedPoint(16)

    prod = fp.decode(fp.mul(fp.encode([a]), fp.encode([b])))[0]

    # each encoding errs by <= res/2, the truncation floors by < res
    tol = fp.resolution * (abs(a) + abs(b) + 2)
    assert abs(prod - a * b) <= tol


def test_truncate_is_arithmetic_shift() -> None:
    fp = FixedPoint(4)

    out = fp.truncate(np.array([-17, 17], dtype=np.int64).view(np.uint64))

    assert out.view(np.int64).tolist() == [-2, 1]


def test_decode_rejects_float_input() -> None:
    with pytest.raises(CryptoError, match="uint64"):
        FixedPoint().decode(np.array([1.0]))
