"""scale_by_hypergradient against the pure rule of eq (15)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


def test_hypergradient_follows_eq_15(sharp_mlp):
    params, loss = sharp_mlp(2)
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


def _square(w):
    return jnp.sum(w**2)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"beta": -1.0}, "beta"),
        ({"beta": np.nan}, "beta"),
        ({"beta": np.inf}, "beta"),
        ({"beta": 0.1, "initial_learning_rate": -1.0}, "initial_learning_rate"),
        ({"beta": 0.1, "initial_learning_rate": np.nan}, "initial_learning_rate"),
        ({"beta": 0.1, "initial_learning_rate": np.inf}, "initial_learning_rate"),
    ],
)
def test_python_number_hyperparameters_are_checked_at_build(kwargs, argument):
    with pytest.raises(ValueError, match=rf"scale_by_hypergradient: {argument} must be"):
        cc.scale_by_hypergradient(**kwargs)


def test_boundary_hyperparameters_are_accepted():
    cc.scale_by_hypergradient(0.0, initial_learning_rate=0.0)
    cc.scale_by_hypergradient(np.float32(1.0), initial_learning_rate=np.float64(3.0))


def _bad_inputs():
    w = jnp.linspace(-1.0, 1.0, 4)
    nan_w = w.at[1].set(jnp.nan)
    g = 2 * w  # a finite direction and gradient: only the named input is bad
    return {
        # name: (params, update keyword arguments)
        "nan_params": (nan_w, {"value_fn": _square}),
        "nan_params_given_grad": (nan_w, {"value_fn": _square, "grad": g}),
        "nan_value_fn": (w, {"value_fn": lambda p: _square(p) + jnp.nan}),
        "inf_value_fn_given_grad": (w, {"value_fn": lambda p: _square(p) + jnp.inf, "grad": g}),
        "inf_value_given": (w, {"value": jnp.inf, "grad": g}),
        "nan_grad_given": (w, {"value": _square(w), "grad": g.at[0].set(jnp.nan)}),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_non_finite_input_gives_zero_update_then_restarts_from_initial(case):
    params, kwargs = _bad_inputs()[case]
    w = jnp.linspace(-1.0, 1.0, 4)
    tuner = cc.scale_by_hypergradient(0.5, initial_learning_rate=0.1)
    state = tuner.init(w)
    _, state = tuner.update(-2 * w, state, w, value_fn=_square)  # one good step first
    w = w - 0.1 * 2 * w
    before = state
    updates, state = jax.jit(lambda s, p: tuner.update(-2 * w, s, p, **kwargs))(state, params)
    assert np.all(np.asarray(updates) == 0.0) and not np.signbit(np.asarray(updates)).any()
    assert float(state.learning_rate) == 0.0 and not bool(state.finite)
    np.testing.assert_array_equal(np.asarray(state.direction), np.asarray(before.direction))
    # The next good step starts again from η₀ (a multiplicative rule would stay at 0).
    updates, state = tuner.update(-2 * w, state, w, value_fn=_square)
    assert float(state.learning_rate) == pytest.approx(0.1, rel=1e-12) and bool(state.finite)
    np.testing.assert_allclose(updates, -0.1 * 2 * w, rtol=1e-12)


def test_value_must_be_a_scalar():
    tuner = cc.scale_by_hypergradient(0.1)
    w = jnp.ones(3)
    with pytest.raises(ValueError, match="value must be a scalar"):
        tuner.update(-2 * w, tuner.init(w), w, value=w**2, grad=2 * w)


@pytest.mark.parametrize(
    ("name", "bad", "finite"),
    [
        ("initial_learning_rate", -1.0, True),  # would be an ascent step: no step instead
        ("initial_learning_rate", np.nan, False),
        ("beta", np.nan, False),
        ("beta", np.inf, False),
    ],
)
def test_bad_traced_hyperparameter_at_a_restart_gives_zero_step(name, bad, finite):
    tuner = optax.inject_hyperparams(cc.scale_by_hypergradient)(beta=0.5, initial_learning_rate=0.1)
    w = jnp.linspace(-1.0, 1.0, 4)
    step = jax.jit(lambda w, s: tuner.update(-2 * w, s, w, value_fn=_square))
    state = tuner.init(w)
    good = state.hyperparams[name]
    state.hyperparams[name] = jnp.asarray(bad, good.dtype)
    updates, state = step(w, state)
    assert np.all(np.asarray(updates) == 0.0)
    assert float(state.inner_state.learning_rate) == 0.0
    assert bool(state.inner_state.finite) == finite
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.inner_state))
    state.hyperparams[name] = good
    updates, state = step(w, state)
    assert float(state.inner_state.learning_rate) == pytest.approx(0.1, rel=1e-12)
    np.testing.assert_allclose(updates, -0.1 * 2 * w, rtol=1e-12)


def test_negative_traced_beta_counts_as_zero():
    tuner = optax.inject_hyperparams(cc.scale_by_hypergradient)(beta=0.5, initial_learning_rate=0.1)
    w = jnp.linspace(-1.0, 1.0, 4)
    step = jax.jit(lambda w, s: tuner.update(-2 * w, s, w, value_fn=_square))
    state = tuner.init(w)
    state.hyperparams["beta"] = jnp.asarray(
        -0.5, state.hyperparams["beta"].dtype
    )  # traced under jit: sanitised, not checked
    for _ in range(3):  # β = 0: η stays at η₀
        updates, state = step(w, state)
        w = w + updates
        assert float(state.inner_state.learning_rate) == pytest.approx(0.1, rel=1e-12)
