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


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_integer_params_are_a_clear_error_at_init_and_update(make_tuner):
    opt = make_tuner()
    int_params = {"w": jnp.zeros((3, 2), jnp.int32), "b": 0.5 * jnp.ones((2,))}
    with pytest.raises(TypeError, match=r"params\['w'\] has dtype int32"):
        opt.init(int_params)
    p = _params()
    state = opt.init(p)
    grad = jax.grad(_loss)(p)
    with pytest.raises(TypeError, match=r"params\['w'\] has dtype int32"):
        opt.update(grad, state, int_params, value_fn=_loss)


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_python_float_params_work_like_arrays(make_tuner):
    def loss(p):
        return (p["a"] - 1.0) ** 2 + jnp.cosh(p["b"])

    floats = {"a": 0.25, "b": 0.5}
    arrays = jax.tree.map(jnp.asarray, floats)
    results = []
    for p in (floats, arrays):
        opt = make_tuner()
        state = opt.init(p)
        updates, state = opt.update(jax.grad(loss)(p), state, p, value_fn=loss)
        results.append((updates, float(optax.tree.get(state, "learning_rate"))))
    (u_floats, lr_floats), (u_arrays, lr_arrays) = results
    assert lr_floats == lr_arrays > 0
    for a, b in zip(jax.tree.leaves(u_floats), jax.tree.leaves(u_arrays), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_non_finite_params_give_zero_update(make_tuner):
    opt = make_tuner()
    p = _params()
    state = opt.init(p)
    grad = jax.grad(_loss)(p)  # a finite direction: only the params are bad
    bad = {"w": p["w"].at[1, 0].set(jnp.nan), "b": p["b"]}
    updates, state = jax.jit(lambda g, s, q: opt.update(g, s, q, value_fn=_loss))(grad, state, bad)
    assert all(np.all(np.asarray(u) == 0.0) for u in jax.tree.leaves(updates))
    assert float(optax.tree.get(state, "learning_rate")) == 0.0
