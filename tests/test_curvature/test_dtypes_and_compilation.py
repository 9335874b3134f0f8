"""Outputs keep the params' dtype, low-precision reductions keep the answer, jit traces once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import _tree, testing

LOW = [jnp.float32, jnp.bfloat16]


def _problem(dtype):
    spd = testing.matrix_with_spectrum(testing.log_spaced_spectrum(16, 10.0, top=2.0), seed=0)
    q = testing.quadratic(spd, seed=1, dtype=dtype)
    rng = np.random.default_rng(2)
    u = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), dtype), q.params)
    return q, u


def _upcast(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


@pytest.mark.parametrize("dtype", LOW)
def test_outputs_keep_params_dtype(dtype):
    q, u = _problem(dtype)
    dc = cc.directional_curvature(q.fun, q.params, u)
    assert all(x.dtype == dtype for x in dc)
    hv = cc.hvp(q.fun, q.params, u)
    assert all(x.dtype == dtype for x in jax.tree.leaves(hv))
    assert jax.tree.structure(hv) == jax.tree.structure(q.params)


def test_bfloat16_curvature_within_one_percent_of_float32():
    q16, u16 = _problem(jnp.bfloat16)
    q32 = q16._replace(params=_upcast(q16.params))  # same (bf16-rounded) point in float32
    u32 = _upcast(u16)

    dc16 = cc.directional_curvature(q16.fun, q16.params, u16)
    dc32 = cc.directional_curvature(q32.fun, q32.params, u32)
    np.testing.assert_allclose(float(dc16.curvature), float(dc32.curvature), rtol=1e-2)
    np.testing.assert_allclose(float(dc16.slope), float(dc32.slope), rtol=1e-2)

    hu16 = cc.hvp(q16.fun, q16.params, u16)
    hu32 = cc.hvp(q32.fun, q32.params, u32)
    # The pytree inner product accumulates in float32, so uᵀHu from bf16 leaves keeps 1%.
    np.testing.assert_allclose(
        float(_tree.vdot(u16, hu16)), float(_tree.vdot(u32, hu32)), rtol=1e-2
    )


def test_bfloat16_vdot_accumulates_in_float32():
    x = jnp.full((4096,), 1.0 + 2.0**-7, jnp.bfloat16)  # exactly representable in bf16
    exact = 4096 * (1.0 + 2.0**-7) ** 2
    naive = jnp.sum(x * x)  # the products round to bf16 and lose the 2**-14 term
    assert abs(float(naive) - exact) / exact > 1e-5
    assert _tree.vdot(x, x).dtype == jnp.float32
    assert abs(float(_tree.vdot(x, x)) - exact) / exact < 1e-6


def _counting(fun):
    calls = []

    def wrapped(*args):
        calls.append(1)
        return fun(*args)

    return wrapped, calls


ENTRY_POINTS = {
    "directional_curvature": lambda f: jax.jit(
        lambda p, u, x: cc.directional_curvature(f, p, u, x)
    ),
    "hvp": lambda f: jax.jit(lambda p, u, x: cc.hvp(f, p, u, x)),
    "gauss_newton_curvature": lambda f: jax.jit(
        lambda p, u, x: cc.gauss_newton_curvature(
            lambda q, x: f(q, x)[None], lambda out: jnp.sum(out), p, u, x
        )
    ),
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_jit_traces_once_over_new_values(name):
    f, calls = _counting(lambda p, x: jnp.sum(jnp.tanh(p["w"] * x) ** 2))
    jitted = ENTRY_POINTS[name](f)
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(3):
        p = {"w": jnp.asarray(rng.standard_normal(5))}
        u = {"w": jnp.asarray(rng.standard_normal(5))}
        outs.append(jitted(p, u, jnp.asarray(rng.standard_normal(5))))
    assert len(calls) == 1
    first, last = jax.tree.leaves(outs[0]), jax.tree.leaves(outs[-1])
    assert any(not np.allclose(a, b) for a, b in zip(first, last, strict=True))
