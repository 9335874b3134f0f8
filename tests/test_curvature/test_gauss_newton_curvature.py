"""gauss_newton_curvature: equals the Hessian for linear least squares, PSD otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import testing


def _random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), tree)


@pytest.mark.parametrize("seed", range(3))
def test_linear_model_squared_loss_equals_hessian_curvature(seed):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.standard_normal((10, 4)))
    y = jnp.asarray(rng.standard_normal((10, 3)))
    params = {
        "w": jnp.asarray(rng.standard_normal((4, 3))),
        "b": jnp.asarray(rng.standard_normal(3)),
    }
    u = _random_like(params, seed + 1)

    def predict(p, X):
        return X @ p["w"] + p["b"][None, :]

    def loss(out):
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))

    gn = cc.gauss_newton_curvature(predict, loss, params, u, X)
    full = cc.directional_curvature(lambda p, X: loss(predict(p, X)), params, u, X)

    np.testing.assert_allclose(gn.value, full.value, rtol=1e-12)
    np.testing.assert_allclose(gn.slope, full.slope, rtol=1e-12)
    np.testing.assert_allclose(gn.curvature, full.curvature, rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_nonnegative_and_slope_exact_on_mlp(seed):
    m = testing.mlp((3, 6, 4), seed=seed)
    labels = jnp.argmax(m.targets, axis=-1)
    u = _random_like(m.params, seed + 5)

    def loss(logits):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1))

    gn = cc.gauss_newton_curvature(m.predict, loss, m.params, u, m.inputs)
    full = cc.directional_curvature(lambda p, x: loss(m.predict(p, x)), m.params, u, m.inputs)

    assert float(gn.curvature) >= 0.0
    np.testing.assert_allclose(gn.value, full.value, rtol=1e-12)
    np.testing.assert_allclose(gn.slope, full.slope, rtol=1e-10)


def test_zero_direction_gives_zero_curvature_not_negative():
    m = testing.mlp((3, 4, 2), seed=0)
    zero = jax.tree.map(jnp.zeros_like, m.params)
    gn = cc.gauss_newton_curvature(
        m.predict, lambda out: 0.5 * jnp.sum((out - m.targets) ** 2), m.params, zero, m.inputs
    )
    assert float(gn.curvature) == 0.0 and float(gn.slope) == 0.0


def test_non_scalar_loss_is_named():
    m = testing.mlp((3, 4, 2), seed=0)
    with pytest.raises(TypeError, match="loss must return a scalar"):
        cc.gauss_newton_curvature(m.predict, lambda out: out**2, m.params, m.params, m.inputs)
