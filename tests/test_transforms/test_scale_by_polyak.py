"""scale_by_polyak against optax.polyak_sgd."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


def test_polyak_matches_optax_polyak_sgd(sharp_mlp):
    params, loss = sharp_mlp(1)
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


def test_optax_polyak_sgd_calling_convention_without_value_fn(sharp_mlp):
    params, loss = sharp_mlp(3)
    ours = optax.chain(optax.sgd(1.0), cc.scale_by_polyak(max_learning_rate=100.0))
    theirs = optax.polyak_sgd(max_learning_rate=100.0)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    for _ in range(3):
        v, g = jax.value_and_grad(loss)(params)
        u_ours, s_ours = ours.update(g, s_ours, params, value=v, grad=g)  # no value_fn
        u_theirs, s_theirs = theirs.update(g, s_theirs, params, value=v)
        testing.assert_tree_allclose(u_ours, u_theirs, rtol=1e-12, atol=1e-15)
        params = optax.apply_updates(params, u_ours)
    # Without value or grad the objective is needed, and the error says how to pass it.
    with pytest.raises(TypeError, match="value_fn"):
        ours.update(g, s_ours, params, value=v)


def test_non_scalar_value_is_an_error_that_names_it():
    tuner = cc.scale_by_polyak()
    w = jnp.ones(3)
    state = tuner.init(w)
    with pytest.raises(ValueError, match=r"value must be a scalar.*shape \(3,\)"):
        tuner.update(-2 * w, state, w, value=w**2, grad=2 * w)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"max_learning_rate": -1.0}, "max_learning_rate"),
        ({"max_learning_rate": np.nan}, "max_learning_rate"),
        ({"eps": -1.0}, "eps"),
        ({"eps": np.nan}, "eps"),
        ({"f_star": np.nan}, "f_star"),
        ({"f_star": -np.inf}, "f_star"),
    ],
)
def test_python_number_hyperparameters_are_checked_at_build(kwargs, argument):
    with pytest.raises(ValueError, match=rf"scale_by_polyak: {argument} must be"):
        cc.scale_by_polyak(**kwargs)


def test_boundary_hyperparameters_are_accepted():
    cc.scale_by_polyak(f_star=-3.0, max_learning_rate=np.inf, eps=0.0)
    cc.scale_by_polyak(max_learning_rate=0.0)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("f_star", np.nan),
        ("eps", np.inf),
        ("max_learning_rate", np.nan),
        ("max_learning_rate", -1.0),
    ],
)
def test_bad_traced_hyperparameter_gives_a_zero_step(name, bad):
    tuner = optax.inject_hyperparams(cc.scale_by_polyak)(max_learning_rate=1.0)
    opt = optax.chain(optax.sgd(1.0), tuner)
    w = jnp.linspace(-1.0, 1.0, 4)

    def loss(p):
        return jnp.sum(p**2)

    step = jax.jit(lambda w, s: opt.update(jax.grad(loss)(w), s, w, value_fn=loss))
    state = opt.init(w)
    good = state[1].hyperparams[name]
    state[1].hyperparams[name] = jnp.asarray(bad, good.dtype)
    updates, state = step(w, state)
    assert np.all(np.asarray(updates) == 0.0)
    assert float(state[1].inner_state.learning_rate) == 0.0
    assert bool(state[1].inner_state.finite) == (name == "max_learning_rate" and bad == -1.0)
    state[1].hyperparams[name] = good
    updates, state = step(w, state)
    assert float(state[1].inner_state.learning_rate) == 0.25  # f / ‖g‖² = sum w² / 4 sum w²


def test_non_finite_params_give_zero_update():
    tuner = cc.scale_by_polyak()
    w = jnp.array([1.0, jnp.nan])
    state = tuner.init(w)
    updates, state = tuner.update(-jnp.ones(2), state, w, value=1.0, grad=jnp.ones(2))
    assert np.all(np.asarray(updates) == 0.0) and not bool(state.finite)
