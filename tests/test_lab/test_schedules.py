"""cdat_core.lab.schedules: a constant or scheduled learning rate, recorded in the state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core.lab import schedules

M = jnp.asarray(np.diag([4.0, 1.0, 0.25]), jnp.float32)
W = jnp.asarray([1.0, -2.0, 3.0], jnp.float32)


def loss(w):
    return 0.5 * w @ (M @ w)


def one_update(opt, w=W):
    g = jax.grad(loss)(w)
    return opt.update(g, opt.init(w), w)


def test_scheduled_learning_rate_scales_and_records():
    opt = optax.chain(optax.sgd(1.0), schedules.scale_by_scheduled_learning_rate(0.25))
    updates, state = one_update(opt)
    np.testing.assert_allclose(updates, -0.25 * np.asarray(M @ W), rtol=1e-6)
    assert float(optax.tree.get(state, "learning_rate")) == 0.25

    sched = schedules.scale_by_scheduled_learning_rate(lambda t: 0.1 * (t + 1).astype(jnp.float32))
    state = sched.init(W)
    seen = []
    for _ in range(3):
        _, state = sched.update(W, state)
        seen.append(float(state.learning_rate))
    np.testing.assert_allclose(seen, [0.1, 0.2, 0.3], rtol=1e-6)


def test_the_state_keeps_the_params_dtype_and_counts():
    opt = schedules.scale_by_scheduled_learning_rate(0.5)
    state = opt.init({"w": jnp.ones(2, jnp.float64)})
    assert state.learning_rate.dtype == jnp.float64 and int(state.count) == 0
    _, state = opt.update({"w": jnp.ones(2, jnp.float64)}, state)
    assert int(state.count) == 1 and float(state.learning_rate) == 0.5
