"""scale_by_linesearch, scale_by_polyak, scale_by_hypergradient, scale_by_sharpness against
their references (optax, the pure rules, dense eigensolvers)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


def _mlp_problem(seed=0):
    m = testing.mlp((4, 8, 3), num_examples=16, seed=seed)
    inputs = 3.0 * m.inputs  # sharper, so that searches backtrack

    def loss(p):
        return m.loss(p, inputs, m.targets)

    return m.params, loss


@pytest.mark.parametrize(("c", "increase"), [(0.0, np.inf), (1e-4, 4.0), (0.5, np.inf)])
def test_linesearch_matches_optax_backtracking(c, increase):
    params, loss = _mlp_problem()
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


def test_polyak_matches_optax_polyak_sgd():
    params, loss = _mlp_problem(1)
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


def test_hypergradient_follows_eq_15():
    params, loss = _mlp_problem(2)
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


def test_edge_of_stability_plain_and_preconditioned():
    spd = testing.matrix_with_spectrum([8.0, 2.0, 1.0], seed=4)
    A = jnp.asarray(spd.matrix)

    def loss(w):
        return 0.5 * w @ A @ w

    w = jnp.ones(3)
    eos = cc.edge_of_stability(loss, w, learning_rate=0.25, key=jax.random.key(0), num_iters=3)
    assert float(eos.product) == pytest.approx(2.0, rel=1e-9) and not eos.preconditioned

    with jax.numpy_dtype_promotion("standard"):
        opt = cc.cdat(optax.adam(1.0, b2=0.99), sigma=2.0)
        state = opt.init(w)
        _, state = opt.update(A @ w, state, w, value_fn=loss)
        eos = cc.edge_of_stability(
            loss, w, opt_state=state, key=jax.random.key(1), num_iters=3, b2=0.99
        )
    nu_hat = (A @ w) ** 2  # one step: ν̂ = g² after bias correction
    p_inv_sqrt = 1.0 / jnp.sqrt(jnp.sqrt(nu_hat) + 1e-8)
    dense = jnp.linalg.eigvalsh(p_inv_sqrt[:, None] * A * p_inv_sqrt[None, :])[-1]
    assert eos.preconditioned
    # Lanczos stops at its default rtol = 1e-3 residual: the Ritz value is then within ~1e-6.
    assert float(eos.sharpness) == pytest.approx(float(dense), rel=1e-5)
    lr = float(optax.tree.get(state, "learning_rate"))
    assert float(eos.product) == pytest.approx(lr * float(dense), rel=1e-5)
