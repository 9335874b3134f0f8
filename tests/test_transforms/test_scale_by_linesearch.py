"""scale_by_linesearch: against optax's backtracking, failed searches, continuation, validation.

A failed search gives an exactly zero update recorded in the state (learning_rate 0, accepted
False, num_steps, smallest_tried), and the next search continues below the smallest learning
rate tried (initial_learning_rate). Convergence on optax's problems, side by side with optax, is
in tests/test_linesearch/test_optax_problems.py.
"""

import math

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


def _cliff(p):
    """f = |p|² where every coordinate exceeds 0.5, NaN elsewhere."""
    return jnp.where(jnp.all(p > 0.5), jnp.sum(p**2), jnp.nan)


def _square(p):
    return jnp.sum(p**2)


def _finite_state(state):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state))


def test_failed_search_is_exactly_zero_and_recorded():
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(increase_factor=4.0, max_steps=3))
    w = jnp.ones(2)
    state = opt.init(w)
    # u = -2w: trials 1, 0.8, 0.64 land at w(1 - 2η) < 0.5, where f is NaN.
    updates, state = opt.update(2 * w, state, w, value_fn=_cliff)
    assert np.all(np.asarray(updates) == 0.0) and not np.any(np.signbit(np.asarray(updates)))
    s = state[1]
    assert not bool(s.accepted) and float(s.learning_rate) == 0.0
    assert int(s.num_steps) == 3
    assert float(s.smallest_tried) == pytest.approx(0.64)
    assert float(s.value) == 2.0 and float(s.slope) == -8.0
    assert int(s.num_updates) == 1
    assert _finite_state(state)


def test_next_search_continues_below_the_smallest_trial():
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(increase_factor=4.0, max_steps=3))
    w = jnp.ones(2)
    state = opt.init(w)
    _, state = opt.update(2 * w, state, w, value_fn=_cliff)  # fails, smallest trial 0.64
    updates, state = opt.update(2 * w, state, w, value_fn=_square)
    # Starts at 0.8 · 0.64 (not at η_max = 1, not at optax's 4 · 0 = 0) and accepts it at once.
    assert bool(state[1].accepted) and int(state[1].num_steps) == 1
    assert float(state[1].learning_rate) == pytest.approx(0.512)
    np.testing.assert_allclose(np.asarray(updates), -0.512 * 2 * np.ones(2), rtol=1e-6)
    # After the accepted step the paper's rule applies again: min(4 · 0.512, 1) = 1.
    _, state = opt.update(2 * w, state, w, value_fn=_square)
    assert float(state[1].learning_rate) == 1.0


def test_stiff_quadratic_does_not_stall():
    """The issue's repro: f = 5e3|w|², η < 2e-4 needed, 0.8^29 = 1.5e-3 is the last default trial.

    Before the fix every search restarted from 1 and failed: 0 of 50 steps moved. Now the
    second search continues from 0.8^30 and accepts 0.8^39 = 1.7e-4 (|1 - 1e4·η| = 0.66).
    """
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch())
    loss = lambda w: 5e3 * jnp.sum(w**2)  # noqa: E731
    w = jnp.ones(3, jnp.float32)
    state = opt.init(w)
    step = jax.jit(lambda w, s: opt.update(jax.grad(loss)(w), s, w, value_fn=loss))
    updates, state = step(w, state)
    assert not bool(state[1].accepted) and int(state[1].num_steps) == 30
    assert np.all(np.asarray(updates) == 0.0)
    updates, state = step(w, state)
    assert bool(state[1].accepted) and int(state[1].num_steps) == 10
    assert float(state[1].learning_rate) == pytest.approx(0.8**39, rel=1e-5)
    assert float(loss(w + updates)) < 0.5 * float(loss(w))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_direction_is_zero_and_keeps_the_continuation_point(bad):
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(max_steps=3))
    w = jnp.ones(2)
    state = opt.init(w)
    _, state = opt.update(2 * w, state, w, value_fn=_cliff)  # fails: continuation at 0.512
    g = jnp.asarray([bad, 1.0])
    updates, state = opt.update(g, state, w, value_fn=_square)
    assert np.all(np.asarray(updates) == 0.0)
    assert not bool(state[1].accepted) and int(state[1].num_steps) == 0
    assert float(state[1].smallest_tried) == pytest.approx(0.64)  # nothing tried: kept
    _, state = opt.update(2 * w, state, w, value_fn=_square)
    assert float(state[1].learning_rate) == pytest.approx(0.512)


def test_ascent_direction_is_zero_and_recorded():
    opt = optax.chain(optax.sgd(-1.0), cc.scale_by_linesearch())  # u = +∇f
    w = jnp.ones(2)
    state = opt.init(w)
    updates, state = opt.update(2 * w, state, w, value_fn=_square)
    assert np.all(np.asarray(updates) == 0.0)
    assert not bool(state[1].accepted) and int(state[1].num_steps) == 0
    assert float(state[1].slope) > 0 and float(state[1].smallest_tried) == 0.0
    assert _finite_state(state)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("decrease_factor", 0.0),
        ("decrease_factor", 1.0),
        ("decrease_factor", 1.5),
        ("decrease_factor", math.nan),
        ("increase_factor", 0.5),
        ("increase_factor", -1.0),
        ("increase_factor", math.nan),
        ("c", -1e-4),
        ("c", math.nan),
        ("delta", -1e-3),
        ("delta", math.inf),
        ("max_learning_rate", 0.0),
        ("max_learning_rate", -1.0),
        ("max_learning_rate", math.inf),
        ("max_learning_rate", math.nan),
    ],
)
def test_python_hyperparameters_are_validated_when_built(name, bad):
    with pytest.raises(ValueError, match=name):
        cc.scale_by_linesearch(**{name: bad})


@pytest.mark.parametrize(("max_steps", "error"), [(0, ValueError), (2.5, TypeError)])
def test_max_steps_is_validated_when_built(max_steps, error):
    with pytest.raises(error, match="max_steps"):
        cc.scale_by_linesearch(max_steps=max_steps)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("decrease_factor", np.nan),
        ("decrease_factor", 1.5),
        ("c", np.nan),
        ("c", -1.0),
        ("delta", np.inf),
        ("max_learning_rate", np.nan),
        ("max_learning_rate", -1.0),
    ],
)
def test_traced_bad_hyperparameter_gives_a_zero_step_and_does_not_poison(name, bad):
    tuner = optax.inject_hyperparams(cc.scale_by_linesearch, static_args=("max_steps",))(
        max_steps=20
    )
    opt = optax.chain(optax.sgd(1.0), tuner)
    traces = []

    @jax.jit
    def step(w, state):
        traces.append(None)
        updates, state = opt.update(w, state, w, value_fn=_square)  # u = -w: η = 1 is exact
        return optax.apply_updates(w, updates), state

    w = jnp.linspace(-1.0, 1.0, 4)
    state = opt.init(w)
    good = state[1].hyperparams[name]
    state[1].hyperparams[name] = jnp.asarray(bad, good.dtype)
    w_bad, state = step(w, state)
    assert np.array_equal(np.asarray(w_bad), np.asarray(w))  # zero update
    assert not bool(state[1].inner_state.accepted)
    assert _finite_state(state[1].inner_state)
    state[1].hyperparams[name] = good  # restored: the next step is a normal one
    w_next, state = step(w_bad, state)
    assert bool(state[1].inner_state.accepted)
    assert float(_square(w_next)) < float(_square(w))
    assert len(traces) == 1


@pytest.mark.parametrize("bad", [0.5, 0.0, np.nan])
def test_traced_increase_factor_below_one_counts_as_one(bad):
    tuner = optax.inject_hyperparams(cc.scale_by_linesearch, static_args=("max_steps",))(
        increase_factor=4.0, max_steps=20
    )
    opt = optax.chain(optax.sgd(1.0), tuner)
    loss = lambda w: 3.0 * jnp.sum(w**2)  # noqa: E731  # accepts η ≤ 1/3: 0.8⁵ from η_max = 1
    step = jax.jit(lambda w, s: opt.update(jax.grad(loss)(w), s, w, value_fn=loss)[1])
    w = jnp.ones(2)
    state = step(w, opt.init(w))
    first = float(state[1].inner_state.learning_rate)
    assert first == pytest.approx(0.8**5)
    state[1].hyperparams["increase_factor"] = jnp.asarray(bad, jnp.float64)
    state = step(w, state)
    assert float(state[1].inner_state.learning_rate) == pytest.approx(first)  # c₊ = 1
    assert int(state[1].inner_state.num_steps) == 1


def test_low_precision_params_keep_a_float32_state():
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(max_steps=3))
    w = jnp.ones(2, jnp.bfloat16)
    state = opt.init(w)
    loss = lambda p: _square(p.astype(jnp.float32))  # noqa: E731
    updates, state = opt.update(jnp.full(2, 2.0, jnp.bfloat16), state, w, value_fn=loss)
    assert updates.dtype == jnp.bfloat16
    assert state[1].learning_rate.dtype == jnp.float32
    assert state[1].smallest_tried.dtype == jnp.float32
    # u = -2w, f(w(1 - 2η)) ≤ f(w) for η ≤ 1: accepted at once.
    assert bool(state[1].accepted) and float(state[1].learning_rate) == 1.0
