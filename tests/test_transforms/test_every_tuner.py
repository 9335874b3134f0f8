"""Contract checks run for every tuner: compile once, dtypes, MultiSteps, non-finite objective."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


def _loss(p):
    return jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum(jnp.cosh(p["b"]))


def _params(dtype=jnp.float64):
    return {"w": jnp.zeros((3, 2), dtype), "b": 0.5 * jnp.ones((2,), dtype)}


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_second_jitted_call_does_not_retrace(make_tuner):
    opt = make_tuner()
    traces = []

    @jax.jit
    def step(p, state):
        traces.append(1)
        value, grad = jax.value_and_grad(_loss)(p)
        updates, state = opt.update(grad, state, p, value_fn=_loss, value=value, grad=grad)
        return optax.apply_updates(p, updates), state

    p = _params()
    state = opt.init(p)
    for _ in range(3):
        p, state = step(p, state)
    assert len(traces) == 1
    assert float(_loss(p)) < float(_loss(_params()))


@pytest.mark.usefixtures("standard_dtype_promotion")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_kept_in_updates_and_state(make_tuner, dtype):
    opt = make_tuner()
    p = _params(dtype)

    def loss(q):
        return _loss(jax.tree.map(lambda x: x.astype(jnp.float32), q)).astype(dtype)

    state = opt.init(p)
    grad = jax.grad(loss)(p)
    updates, new_state = jax.jit(lambda g, s, p: opt.update(g, s, p, value_fn=loss))(grad, state, p)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True):
        assert old.dtype == new.dtype and old.shape == new.shape
    assert float(optax.tree.get(new_state, "learning_rate")) > 0


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_inside_multisteps(make_tuner):
    opt = optax.MultiSteps(make_tuner(), every_k_schedule=2)
    p = _params()
    state = opt.init(p)
    seen = []

    @jax.jit
    def update(p, state):
        value, grad = jax.value_and_grad(_loss)(p)
        return opt.update(grad, state, p, value_fn=_loss, value=value, grad=grad)

    for _ in range(4):
        updates, state = update(p, state)
        seen.append(float(sum(jnp.sum(jnp.abs(u)) for u in jax.tree.leaves(updates))))
        p = optax.apply_updates(p, updates)
    # MultiSteps emits zeros while accumulating, then the inner tuner's step.
    assert seen[0] == 0.0 and seen[2] == 0.0
    assert seen[1] > 0.0 and seen[3] > 0.0
    assert float(_loss(p)) < float(_loss(_params()))


@pytest.mark.usefixtures("standard_dtype_promotion")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_objective_gives_zero_update_and_finite_params(make_tuner, bad):
    opt = make_tuner()
    p = _params()
    state = opt.init(p)

    def broken(q, scale):
        return _loss(q) * scale

    @jax.jit
    def update(p, state, scale):
        value, grad = jax.value_and_grad(broken)(p, scale)
        return opt.update(grad, state, p, value_fn=broken, scale=scale, value=value, grad=grad)

    # One good step first, so that the tuner's state holds real averages / learning rates.
    updates, state = update(p, state, 1.0)
    p = optax.apply_updates(p, updates)
    updates, state = update(p, state, bad)
    leaves = [np.asarray(u) for u in jax.tree.leaves(updates)]
    assert all(np.all(u == 0.0) for u in leaves), leaves
    assert float(optax.tree.get(state, "learning_rate")) == 0.0
    new_p = optax.apply_updates(p, updates)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_p))
