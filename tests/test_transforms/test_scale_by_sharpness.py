"""scale_by_sharpness against the known top eigenvalue of a chosen spectrum."""

import jax
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


def test_sharpness_rule_uses_lambda_max():
    spd = testing.matrix_with_spectrum([6.0, 3.0, 1.0, 0.5], seed=3)
    q = testing.quadratic(spd, seed=3)
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_sharpness(sigma=3.0, num_iters=4))
    state = opt.init(q.params)
    g = jax.grad(q.fun)(q.params)
    updates, state = jax.jit(lambda g, s, p: opt.update(g, s, p, value_fn=q.fun))(
        g, state, q.params
    )
    assert float(state[1].sharpness) == pytest.approx(6.0, rel=1e-9)
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(0.5, rel=1e-9)
    testing.assert_tree_allclose(updates, jax.tree.map(lambda x: -0.5 * x, g))
