"""Bad input to the curvature entry points fails at trace time with a clear message."""

import jax.numpy as jnp
import pytest

import cdat_core as cc


def _quad(p):
    return jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2)


def _predict(p):
    return p["a"] * 2.0


def _loss(out):
    return jnp.sum(out**2)


PARAMS = {"a": jnp.ones(3), "b": jnp.ones(2)}

ENTRY_POINTS = {
    "directional_curvature": lambda f, p, u: cc.directional_curvature(f, p, u),
    "hvp": lambda f, p, u: cc.hvp(f, p, u),
    "gauss_newton_curvature": lambda f, p, u: cc.gauss_newton_curvature(_predict, _loss, p, u),
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_mismatched_structure_names_both(name):
    bad = {"a": jnp.ones(3), "c": jnp.ones(2)}
    with pytest.raises(ValueError) as info:
        ENTRY_POINTS[name](_quad, PARAMS, bad)
    message = str(info.value)
    assert "params" in message and ("direction" in message or "vector" in message)
    assert "'b'" in message and "'c'" in message  # both structures are shown


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_mismatched_leaf_shape_is_named(name):
    bad = {"a": jnp.ones(4), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"\['a'\] has shape \(4,\)"):
        ENTRY_POINTS[name](_quad, PARAMS, bad)


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_integer_params_are_refused(name):
    params = {"a": jnp.arange(3), "b": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"params\['a'\] has dtype int"):
        ENTRY_POINTS[name](_quad, params, PARAMS)


@pytest.mark.parametrize("name", ["directional_curvature", "hvp"])
def test_non_scalar_objective_is_refused(name):
    with pytest.raises(TypeError, match=r"fun must return a scalar.*shape \(3,\)"):
        ENTRY_POINTS[name](lambda p: p["a"] ** 2, PARAMS, PARAMS)


def test_integer_objective_is_refused():
    with pytest.raises(TypeError, match="floating-point"):
        cc.directional_curvature(lambda p: jnp.sum(p["a"] > 0), PARAMS, PARAMS)


def test_direction_dtype_is_cast_to_params_dtype():
    params = {"a": jnp.ones(3, jnp.float32), "b": jnp.ones(2, jnp.float32)}
    direction = {"a": jnp.ones(3, jnp.float64), "b": jnp.ones(2, jnp.float64)}
    out = cc.hvp(_quad, params, direction)
    assert out["a"].dtype == jnp.float32
    assert float(cc.directional_curvature(_quad, params, direction).curvature) == pytest.approx(
        10.0
    )
