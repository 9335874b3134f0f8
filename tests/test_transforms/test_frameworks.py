"""Tuners train models written with equinox and flax.nnx, through their partition/split APIs."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import cdat_core as cc

# equinox and flax mix dtypes internally, which strict promotion refuses.
pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")


def _data(seed=0):
    k1, _k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (32, 4))
    y = jnp.sin(x @ jnp.arange(1.0, 5.0))[:, None]
    return x, y


def _train_with_cdat(loss, params, x, y, num_steps=200):
    """Train with CDAT (σ = 1.9) on gradient descent; return params, state, first loss."""
    opt = cc.cdat(optax.sgd(1.0), sigma=1.9)

    @jax.jit
    def step(p, state):
        grad = jax.grad(loss)(p, x, y)
        updates, state = opt.update(grad, state, p, value_fn=loss, x=x, y=y)
        return optax.apply_updates(p, updates), state

    first = loss(params, x, y)
    state = opt.init(params)
    for _ in range(num_steps):
        params, state = step(params, state)
    return params, state, first


def test_equinox_model_trains_with_cdat():
    x, y = _data()
    model = eqx.nn.MLP(4, 1, width_size=8, depth=2, activation=jnp.tanh, key=jax.random.key(1))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, x, y):
        m = eqx.combine(p, static)
        return 0.5 * jnp.mean((jax.vmap(m)(x) - y) ** 2)

    params, state, first = _train_with_cdat(loss, params, x, y)
    assert float(loss(params, x, y)) < 0.5 * float(first)
    assert float(optax.tree.get(state, "learning_rate")) > 0
    trained = eqx.combine(params, static)
    assert jax.vmap(trained)(x).shape == y.shape


class _NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(4, 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def test_flax_nnx_model_trains_with_cdat():
    x, y = _data(1)
    graphdef, params = nnx.split(_NnxMLP(nnx.Rngs(0)), nnx.Param)

    def loss(p, x, y):
        return 0.5 * jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

    params, state, first = _train_with_cdat(loss, params, x, y)
    assert float(loss(params, x, y)) < 0.5 * float(first)
    assert float(optax.tree.get(state, "learning_rate")) > 0
    assert nnx.merge(graphdef, params)(x).shape == y.shape
