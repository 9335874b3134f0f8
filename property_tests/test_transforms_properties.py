"""Every tuner's bad-hyperparameter contract, as a property over arbitrary traced values.

Whatever non-finite or out-of-range number ``optax.inject_hyperparams`` feeds a tuner for one
step (NaN, ±inf, negative down to subnormals, ``ema_decay >= 1``), that step's update is
finite and is either exactly zero or the recorded learning rate times the direction; the
tuner's state stays finite; and once the hyperparameter is restored, training steps again.
(An in-range but extreme value, e.g. ``eps=1e155`` with ``ema_decay=0.5``, is remembered by
the average as a huge curvature would be: that is the EMA's job, not poisoning.) Each property
has a deterministic twin below it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given
from hypothesis import strategies as st

import cdat_core as cc

# name: (factory, good hyperparameters, static (structural) arguments)
TUNERS = {
    "cdat": (
        cc.scale_by_cdat,
        {"sigma": 1.5, "ema_decay": 0.5, "eps": 1e-3, "max_learning_rate": 10.0},
        {},
    ),
    "polyak": (cc.scale_by_polyak, {"f_star": 0.0, "max_learning_rate": 1.0, "eps": 0.0}, {}),
    "hypergradient": (cc.scale_by_hypergradient, {"beta": 0.5, "initial_learning_rate": 0.1}, {}),
    "sharpness": (
        cc.scale_by_sharpness,
        {"sigma": 1.5, "max_learning_rate": 10.0},
        {"num_iters": 4},
    ),
}
HYPERPARAMETERS = [(tuner, name) for tuner, (_, good, _) in TUNERS.items() for name in good]
NON_FINITE = [np.nan, np.inf, -np.inf]


def _out_of_range(name):
    """Strategy for the values of hyperparameter ``name`` that its factory would reject."""
    if name == "f_star":  # any finite lower bound is valid
        return st.sampled_from(NON_FINITE)
    negative = st.floats(max_value=-5e-324, allow_infinity=False)
    if name == "ema_decay":  # valid in [0, 1)
        return st.one_of(st.sampled_from(NON_FINITE), negative, st.floats(min_value=1.0))
    return st.one_of(st.sampled_from(NON_FINITE), negative)  # valid: >= 0


A = jnp.array([4.0, 2.0, 1.0, 0.5])


def _loss(w):
    return 0.5 * jnp.sum(A * w**2)


@functools.cache
def _compiled(tuner):
    factory, good, static = TUNERS[tuner]
    opt = optax.inject_hyperparams(factory, static_args=tuple(static))(**good, **static)

    @jax.jit
    def step(w, state):
        direction = -jax.grad(_loss)(w)
        updates, state = opt.update(direction, state, w, value_fn=_loss)
        return updates, direction, state

    return opt, step


def check_one_bad_step_never_poisons(tuner, name, bad):
    opt, step = _compiled(tuner)
    w = jnp.array([1.0, -1.0, 0.5, 2.0])
    state = opt.init(w)
    updates, _, state = step(w, state)  # one good step: the state holds real numbers
    w = w + updates
    good = state.hyperparams[name]
    state.hyperparams[name] = jnp.asarray(bad, good.dtype)
    updates, direction, state = step(w, state)
    inner = state.inner_state
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(inner)), inner
    learning_rate = float(inner.learning_rate)
    assert learning_rate >= 0.0
    if learning_rate == 0.0:
        np.testing.assert_array_equal(np.asarray(updates), 0.0)
    else:
        np.testing.assert_allclose(updates, learning_rate * direction, rtol=1e-12)
    w = w + updates
    state.hyperparams[name] = good
    for _ in range(2):
        updates, _, state = step(w, state)
        w = w + updates
    assert float(state.inner_state.learning_rate) > 0.0
    assert bool(jnp.all(jnp.isfinite(w)))


@given(st.sampled_from(HYPERPARAMETERS), st.data())
def test_one_bad_traced_hyperparameter_never_poisons_the_state(tuner_and_name, data):
    tuner, name = tuner_and_name
    check_one_bad_step_never_poisons(tuner, name, data.draw(_out_of_range(name), label=name))


def test_one_bad_traced_hyperparameter_never_poisons_the_state_twin():
    for tuner, name in HYPERPARAMETERS:
        bads = [np.nan, np.inf] + ([] if name == "f_star" else [-1.0, -1e-310])
        for bad in bads + ([1.0, 1e30] if name == "ema_decay" else []):
            check_one_bad_step_never_poisons(tuner, name, bad)
