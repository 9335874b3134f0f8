"""testing.floats draws only the normal floats JAX computes with as NumPy does.

XLA's CPU backend flushes subnormals to zero; a strategy that draws them makes a property
fail at random (issue 11: σ = 2.2e-313 in the CDAT linearity property).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdat_core import testing

TINY64 = float(np.finfo(np.float64).tiny)
TINY32 = float(np.finfo(np.float32).tiny)


def test_plain_hypothesis_floats_can_draw_a_value_jax_flushes_to_zero():
    # The cause of the flake: a subnormal that st.floats(0.0, x) may draw, which XLA zeroes.
    x = 2.2e-313
    assert x * 1.0 == x
    assert float(jnp.float64(x) * jnp.float64(1.0)) == 0.0


@settings(max_examples=60, deadline=None)
@given(testing.floats(-1e-300, 1e-300))
def test_draws_survive_a_jax_multiplication_unchanged(x):
    assert x == 0.0 or abs(x) >= TINY64
    assert float(jnp.float64(x) * jnp.float64(1.0)) == x


@settings(max_examples=60, deadline=None)
@given(testing.floats(0.1, 0.3, width=32), testing.floats(-1e-37, 1e-37, width=32))
def test_float32_draws_are_exact_and_inside_the_range(x, small):
    assert 0.1 <= x <= 0.3
    assert float(np.float32(x)) == x
    assert small == 0.0 or TINY32 <= abs(small) <= 1e-37
    assert float(jnp.float32(small) * jnp.float32(1.0)) == small


def test_bounds_need_not_be_representable_in_the_width():
    from hypothesis.errors import InvalidArgument

    with pytest.raises(InvalidArgument):  # what plain hypothesis does with 0.1 at width 32
        st.floats(0.1, 0.3, width=32).validate()
    testing.floats(0.1, 0.3, width=32).validate()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_value": 1e-320, "max_value": 2e-320}, "min_value, max_value"),
        ({"min_value": 0.0, "max_value": 1.0, "width": 8}, "width"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        testing.floats(**kwargs)
