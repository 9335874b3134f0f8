"""scale_by_polyak against optax.polyak_sgd."""

import jax
import optax

import cdat_core as cc
from cdat_core import testing


def test_polyak_matches_optax_polyak_sgd(sharp_mlp):
    params, loss = sharp_mlp(1)
    ours = optax.chain(optax.sgd(1.0), cc.scale_by_polyak(max_learning_rate=100.0))
    theirs = optax.polyak_sgd(max_learning_rate=100.0)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    p = params

    @jax.jit
    def both(p, s_ours, s_theirs):
        v, g = jax.value_and_grad(loss)(p)
        u_ours, s_ours = ours.update(g, s_ours, p, value_fn=loss)
        u_theirs, s_theirs = theirs.update(g, s_theirs, p, value=v)
        return u_ours, s_ours, u_theirs, s_theirs

    for _ in range(5):
        u_ours, s_ours, u_theirs, s_theirs = both(p, s_ours, s_theirs)
        testing.assert_tree_allclose(u_ours, u_theirs, rtol=1e-12, atol=1e-15)
        p = optax.apply_updates(p, u_ours)
