"""scale_by_hypergradient against the pure rule of eq (15)."""

import jax
import jax.numpy as jnp
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


def test_hypergradient_follows_eq_15(sharp_mlp):
    params, loss = sharp_mlp(2)
    beta, lr0 = 0.05, 0.01
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_hypergradient(beta, initial_learning_rate=lr0))
    state = opt.init(params)
    p, lr, prev_u = params, lr0, None
    # Without grad=..., the transformation computes ∇f(w_t) itself: same result.
    update = jax.jit(lambda g, s, p: opt.update(g, s, p, value_fn=loss))
    for t in range(6):
        g = jax.grad(loss)(p)
        u = jax.tree.map(jnp.negative, g)
        if t > 0:
            lr = float(cc.hypergradient_learning_rate(lr, g, prev_u, beta=beta))
        updates, state = update(g, state, p)
        assert float(state[1].learning_rate) == pytest.approx(lr, rel=1e-12)
        testing.assert_tree_allclose(updates, jax.tree.map(lambda x, lr=lr: lr * x, u))
        p, prev_u = optax.apply_updates(p, updates), u
