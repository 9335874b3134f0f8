"""scale_by_linesearch against optax's backtracking linesearch, and its failed-search restart."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


@pytest.mark.parametrize(("c", "increase"), [(0.0, np.inf), (1e-4, 4.0), (0.5, np.inf)])
def test_linesearch_matches_optax_backtracking(c, increase, sharp_mlp):
    params, loss = sharp_mlp()
    ours = optax.chain(
        optax.sgd(1.0),
        cc.scale_by_linesearch(c=c, increase_factor=increase, decrease_factor=0.8, max_steps=31),
    )
    theirs = optax.chain(
        optax.sgd(1.0),
        optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=30,
            slope_rtol=c,
            decrease_factor=0.8,
            increase_factor=increase,
            max_learning_rate=1.0,
        ),
    )
    p_ours, p_theirs = params, params
    s_ours, s_theirs = ours.init(params), theirs.init(params)

    def stepper(opt):
        @jax.jit
        def step(p, s):
            v, g = jax.value_and_grad(loss)(p)
            u, s = opt.update(g, s, p, value_fn=loss, value=v, grad=g)
            return optax.apply_updates(p, u), s

        return step

    step_ours, step_theirs = stepper(ours), stepper(theirs)
    rates = []
    for _ in range(15):
        p_ours, s_ours = step_ours(p_ours, s_ours)
        p_theirs, s_theirs = step_theirs(p_theirs, s_theirs)
        ours_lr = float(s_ours[1].learning_rate)
        assert ours_lr == pytest.approx(float(s_theirs[1].learning_rate), rel=1e-12)
        assert bool(s_ours[1].accepted)
        rates.append(ours_lr)
    assert len(set(rates)) > 1  # the searches actually adapted
    testing.assert_tree_allclose(p_ours, p_theirs, rtol=1e-10, atol=1e-12)


def test_linesearch_failed_search_is_zero_and_restarts_from_max():
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(increase_factor=4.0, max_steps=3))
    w = jnp.ones(2)
    state = opt.init(w)

    def cliff(p):  # every trial within 3 steps lands where f is NaN
        return jnp.where(jnp.all(p > 0.5), jnp.sum(p**2), jnp.nan)

    updates, state = opt.update(2 * w, state, w, value_fn=cliff)
    assert np.all(np.asarray(updates) == 0.0)
    assert not bool(state[1].accepted) and float(state[1].learning_rate) == 0.0
    updates, state = opt.update(2 * w, state, w, value_fn=lambda p: jnp.sum(p**2))
    assert bool(state[1].accepted)
    # Restarted from the maximum 1 (optax would guess 4 · 0 = 0); f(w - 1·2w) = f(w) passes c = 0.
    assert float(state[1].learning_rate) == 1.0
