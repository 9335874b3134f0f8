"""backtracking_linesearch + initial_learning_rate against optax.scale_by_backtracking_linesearch.

Mapping (documented in cdat_core/linesearch.py): c → slope_rtol, δ → rtol, atol = 0,
decrease_factor → decrease_factor, max_steps → max_backtracking_steps + 1, the initial guess
min(c₊·η_{t−1}, η_max) → increase_factor, max_learning_rate with optax's state starting at
learning_rate = 1 (so previous = 1 at the first step here).

Where the searches succeed the learning rates and evaluation counts agree exactly along a
50-step gradient-descent run on a small MLP; the last tests pin down where optax differs on
purpose (failed searches, -inf values, negative objective values with δ > 0).
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cdat_core import _tree, testing
from cdat_core.linesearch import backtracking_linesearch, initial_learning_rate

MLP = testing.mlp((4, 8, 3), 16, seed=0)
INPUTS = 3.0 * MLP.inputs  # larger inputs: more curvature, so the searches backtrack
LOSS = MLP.loss
NUM_STEPS = 50


def _neg(tree):
    return jax.tree.map(jnp.negative, tree)


@functools.partial(jax.jit, static_argnames=("max_steps",))
def run_ours(params, c, delta, factor, increase, max_steps):
    def step(carry, _):
        params, previous = carry
        value, grad = jax.value_and_grad(LOSS)(params, INPUTS, MLP.targets)
        u = _neg(grad)
        eta0 = initial_learning_rate(previous, increase_factor=increase, max_learning_rate=1.0)
        res = backtracking_linesearch(
            LOSS,
            params,
            u,
            INPUTS,
            MLP.targets,
            value=value,
            slope=_tree.vdot(grad, u),
            initial_learning_rate=eta0,
            c=c,
            delta=delta,
            decrease_factor=factor,
            max_steps=max_steps,
        )
        params = _tree.axpy(res.learning_rate, u, params)
        return (params, res.learning_rate), (res.learning_rate, res.num_steps, res.accepted)

    _, out = jax.lax.scan(step, (params, jnp.asarray(1.0)), None, length=NUM_STEPS)
    return out


@functools.partial(jax.jit, static_argnames=("max_steps",))
def run_optax(params, c, delta, factor, increase, max_steps):
    opt = optax.scale_by_backtracking_linesearch(
        max_backtracking_steps=max_steps - 1,
        slope_rtol=c,
        decrease_factor=factor,
        increase_factor=increase,
        max_learning_rate=1.0,
        atol=0.0,
        rtol=delta,
    )

    def step(carry, _):
        params, state = carry
        value, grad = jax.value_and_grad(LOSS)(params, INPUTS, MLP.targets)
        updates, state = opt.update(
            _neg(grad),
            state,
            params,
            value=value,
            grad=grad,
            value_fn=LOSS,
            inputs=INPUTS,
            targets=MLP.targets,
        )
        params = optax.apply_updates(params, updates)
        return (params, state), (state.learning_rate, state.info.num_linesearch_steps)

    _, out = jax.lax.scan(step, (params, opt.init(params)), None, length=NUM_STEPS)
    return out


@pytest.mark.parametrize(
    ("c", "delta", "factor", "increase"),
    list(itertools.product([0.0, 1e-4, 0.5], [0.0, 1e-3], [0.8, 0.9], [4.0, math.inf])),
)
def test_learning_rates_equal_optax_along_gradient_descent(c, delta, factor, increase):
    lr, num_steps, accepted = run_ours(MLP.params, c, delta, factor, increase, max_steps=30)
    lr_optax, num_steps_optax = run_optax(MLP.params, c, delta, factor, increase, max_steps=30)
    assert bool(jnp.all(accepted))  # the comparison is about successful searches
    np.testing.assert_array_equal(np.asarray(lr), np.asarray(lr_optax))
    np.testing.assert_array_equal(np.asarray(num_steps), np.asarray(num_steps_optax))
    # Non-trivial: the run backtracked, and the rates vary along it.
    assert int(jnp.max(num_steps)) > 2
    assert len(np.unique(np.asarray(lr))) > 2


# ----------------------------------------------------------------------------------------------
# Where optax differs on purpose. One optax update from a given state learning rate.
# ----------------------------------------------------------------------------------------------


def _optax_step(fun, w, u, previous, *, factor=0.8, increase=math.inf, rtol=0.0, max_steps=30):
    opt = optax.scale_by_backtracking_linesearch(
        max_backtracking_steps=max_steps - 1,
        slope_rtol=0.0,
        decrease_factor=factor,
        increase_factor=increase,
        max_learning_rate=1.0 if previous is None else max(1.0, previous),
        rtol=rtol,
    )
    state = opt.init(w)
    if previous is not None:
        state = state._replace(learning_rate=jnp.asarray(previous, state.learning_rate.dtype))
    value, grad = jax.value_and_grad(fun)(w)
    _, state = opt.update(u, state, w, value=value, grad=grad, value_fn=fun)
    return state


def _our_step(fun, w, u, previous, *, factor=0.8, increase=math.inf, delta=0.0, max_steps=30):
    value, grad = jax.value_and_grad(fun)(w)
    eta0 = initial_learning_rate(
        previous, increase_factor=increase, max_learning_rate=max(1.0, previous)
    )
    return backtracking_linesearch(
        fun,
        w,
        u,
        value=value,
        slope=_tree.vdot(grad, u),
        initial_learning_rate=eta0,
        delta=delta,
        decrease_factor=factor,
        max_steps=max_steps,
    )


def test_ascent_direction_optax_steps_with_last_rejected_rate():
    fun = lambda w: 0.5 * jnp.sum(w**2)  # noqa: E731
    w = jnp.ones(3)
    ours = _our_step(fun, w, w, 1.0, max_steps=5)  # u = +∇f: ascent
    theirs = _optax_step(fun, w, w, 1.0, max_steps=5)
    assert not bool(ours.accepted) and float(ours.learning_rate) == 0.0
    # optax: 5 evaluations, then the 5th (rejected, uphill) learning rate 0.8**4 is used.
    assert int(theirs.info.num_linesearch_steps) == 5
    np.testing.assert_allclose(float(theirs.learning_rate), 0.8**4)
    assert float(theirs.info.decrease_error) > 0


@pytest.mark.parametrize("increase", [4.0, math.inf])
def test_after_a_failed_search_optax_stays_at_zero_and_we_restart(increase):
    # NaN beyond |w| ≥ 2. Step 1 along a huge direction: every trial lands in the NaN region,
    # so both searches fail with learning rate 0. Step 2 along -∇f: a step of 1 is fine.
    fun = lambda w: jnp.sum(jnp.where(jnp.abs(w) < 2.0, 0.5 * w**2, jnp.nan))  # noqa: E731
    w = jnp.asarray([1.0])
    huge = jnp.asarray([-1e3])
    ours = _our_step(fun, w, huge, 1.0, increase=increase, max_steps=10)
    theirs = _optax_step(fun, w, huge, 1.0, increase=increase, max_steps=10)
    assert float(ours.learning_rate) == 0.0 and float(theirs.learning_rate) == 0.0
    assert not bool(ours.accepted)

    ours = _our_step(fun, w, -w, float(ours.learning_rate), increase=increase)
    theirs = _optax_step(fun, w, -w, float(theirs.learning_rate), increase=increase)
    assert bool(ours.accepted) and float(ours.learning_rate) == 1.0  # restarted from the max
    assert float(theirs.learning_rate) == 0.0  # min(c₊·0, 1) = 0 (or inf·0 = nan): stuck


def test_minus_infinity_is_accepted_by_optax_and_rejected_here():
    # f = ½(w - 3)² for w < 2, -inf beyond; from w = 0 along u = 3, η ≥ 2/3 lands beyond 2.
    fun = lambda w: jnp.sum(jnp.where(w < 2.0, 0.5 * (w - 3.0) ** 2, -jnp.inf))  # noqa: E731
    w, u = jnp.zeros(1), jnp.full(1, 3.0)
    ours = _our_step(fun, w, u, 1.0)
    theirs = _optax_step(fun, w, u, 1.0)
    assert float(theirs.learning_rate) == 1.0 and float(theirs.value) == -np.inf
    np.testing.assert_allclose(float(ours.learning_rate), 0.64)  # 0.64·3 = 1.92 < 2
    assert np.isfinite(float(ours.value))


def test_relative_decrease_with_a_negative_value():
    # f(w) = -0.5 at w = 1; the trial η = 2.1 gives f = -0.395: within f + δ|f| = -0.35 for
    # δ = 0.3, but not within optax's (1 + δ)f = -0.65, which is stricter than δ = 0.
    fun = lambda w: -1.0 + 0.5 * jnp.sum(w**2)  # noqa: E731
    w = jnp.ones(1)
    ours = _our_step(fun, w, -w, 2.1, factor=0.5, delta=0.3)
    theirs = _optax_step(fun, w, -w, 2.1, factor=0.5, rtol=0.3)
    np.testing.assert_allclose(float(ours.learning_rate), 2.1)
    np.testing.assert_allclose(float(theirs.learning_rate), 1.05)
