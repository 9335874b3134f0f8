"""A NaN window (a few corrupted batches): the tuner refuses to step, but optax's Adam in front
of it keeps NaN moments for ever unless the chain is wrapped in optax.apply_if_finite."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc

WINDOW = range(20, 23)
NUM_STEPS = 60


def _problem():
    X = jax.random.normal(jax.random.key(0), (64, 4), jnp.float64)
    y = X @ jnp.array([1.0, -2.0, 0.5, 3.0])

    def loss(w, batch):
        return 0.5 * jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    return X, y, loss


def _train(opt):
    X, y, loss = _problem()
    w = jnp.zeros(4)
    state = opt.init(w)

    @jax.jit
    def step(w, state, batch):
        grad = jax.grad(loss)(w, batch)
        updates, state = opt.update(grad, state, w, value_fn=loss, batch=batch)
        return optax.apply_updates(w, updates), state

    trajectory = []
    for t in range(NUM_STEPS):
        x = X.at[0, 0].set(jnp.nan) if t in WINDOW else X
        w, state = step(w, state, {"x": x, "y": y})
        trajectory.append((w, state))
    clean = {"x": X, "y": y}
    return [float(loss(w, clean)) for w, _ in trajectory], trajectory


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_plain_adam_never_recovers_from_one_nan_window():
    values, trajectory = _train(cc.cdat(optax.adam(1.0), ema_decay=0.9))
    assert values[WINDOW.start - 1] < values[0]  # it was training before the window
    w_at_window, _ = trajectory[WINDOW.start]
    for w, state in trajectory[WINDOW.start :]:
        # The tuner keeps its promise (no NaN in params, zero update) ...
        assert np.array_equal(np.asarray(w), np.asarray(w_at_window))
        assert float(optax.tree.get(state, "learning_rate")) == 0.0
    # ... but Adam's moments are NaN for good, so it can never step again.
    assert bool(jnp.isnan(optax.tree.get(trajectory[-1][1], "mu")).any())
    assert values[-1] == values[WINDOW.start]


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_apply_if_finite_keeps_adam_clean_and_training_recovers():
    opt = optax.apply_if_finite(
        cc.cdat(optax.adam(1.0), ema_decay=0.9), max_consecutive_errors=len(WINDOW) + 1
    )
    values, trajectory = _train(opt)
    plain_values, _ = _train(cc.cdat(optax.adam(1.0), ema_decay=0.9))
    for t in WINDOW:  # the whole update is skipped: params and every state unchanged
        (w_before, s_before), (w, s) = trajectory[t - 1], trajectory[t]
        assert np.array_equal(np.asarray(w), np.asarray(w_before))
        np.testing.assert_array_equal(
            np.asarray(optax.tree.get(s, "mu")), np.asarray(optax.tree.get(s_before, "mu"))
        )
    final_state = trajectory[-1][1]
    assert int(final_state.total_notfinite) == len(WINDOW)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(final_state))
    assert float(optax.tree.get(final_state, "learning_rate")) > 0
    # Training went on after the window: well below where the unwrapped run stalled.
    assert values[-1] < 0.2 * plain_values[-1]
    assert values[-1] < 0.5 * values[WINDOW.start]
