"""Invariants of directional curvature, Hessian-vector products and Gauss-Newton curvature."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import cdat_core as cc
from cdat_core import _tree, testing


def _random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), tree)


def check_scaling(m, seed, alpha):
    u = _random_like(m.params, seed)
    base = cc.directional_curvature(m.loss, m.params, u, m.inputs, m.targets)
    au = jax.tree.map(lambda x: alpha * x, u)
    scaled = cc.directional_curvature(m.loss, m.params, au, m.inputs, m.targets)
    tol = 1e-10 * (1 + abs(float(base.curvature))) * max(1.0, alpha**2)
    np.testing.assert_allclose(scaled.slope, alpha * base.slope, rtol=1e-10, atol=tol)
    np.testing.assert_allclose(scaled.curvature, alpha**2 * base.curvature, rtol=1e-10, atol=tol)


@given(testing.mlp_params(), st.integers(0, 2**31), testing.floats(-10.0, 10.0))
def test_curvature_quadratic_and_slope_linear_in_direction(m, seed, alpha):
    check_scaling(m, seed, alpha)


def test_curvature_quadratic_and_slope_linear_in_direction_twin():
    check_scaling(testing.mlp((3, 4, 2), seed=0), 1, -2.5)


def check_hvp_symmetric(m, seed):
    u, v = _random_like(m.params, seed), _random_like(m.params, seed + 1)
    hu = cc.hvp(m.loss, m.params, u, m.inputs, m.targets)
    hv = cc.hvp(m.loss, m.params, v, m.inputs, m.targets)
    a, b = float(_tree.vdot(v, hu)), float(_tree.vdot(u, hv))
    scale = float(_tree.norm(u) * _tree.norm(hv) + _tree.norm(v) * _tree.norm(hu))
    assert abs(a - b) <= 1e-10 * max(scale, 1e-30)
    # uᵀH(u) from the HVP agrees with the forward-over-forward curvature.
    curvature = cc.directional_curvature(m.loss, m.params, u, m.inputs, m.targets).curvature
    np.testing.assert_allclose(_tree.vdot(u, hu), curvature, rtol=1e-9, atol=1e-12 * scale)


@given(testing.mlp_params(), st.integers(0, 2**31))
def test_hvp_symmetric(m, seed):
    check_hvp_symmetric(m, seed)


def test_hvp_symmetric_twin():
    check_hvp_symmetric(testing.mlp((2, 5, 3), seed=3), 4)


@given(testing.mlp_params(), st.integers(0, 2**31))
def test_gauss_newton_curvature_nonnegative_with_convex_loss(m, seed):
    u = _random_like(m.params, seed)

    def squared(out):
        return 0.5 * jnp.mean((out - m.targets) ** 2)

    def cross_entropy(out):
        labels = jax.nn.softmax(m.targets)
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(out), axis=-1))

    for loss in (squared, cross_entropy):
        gn = cc.gauss_newton_curvature(m.predict, loss, m.params, u, m.inputs)
        assert float(gn.curvature) >= 0.0
        full = cc.directional_curvature(
            lambda p, x, loss=loss: loss(m.predict(p, x)), m.params, u, m.inputs
        )
        np.testing.assert_allclose(gn.slope, full.slope, rtol=1e-9, atol=1e-12)
