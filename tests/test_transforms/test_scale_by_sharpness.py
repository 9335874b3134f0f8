"""scale_by_sharpness against the known top eigenvalue of a chosen spectrum."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


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


def _nan_hessian(w):
    # f(w) = Σw² is finite, but the sqrt term's derivatives at w = 1 are not: ∇²f is NaN.
    return jnp.sum(w**2) + 0.0 * jnp.sum(jnp.sqrt(jnp.abs(w - 1.0)))


@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize(
    "case",
    ["nan_hessian", "nan_params", "inf_value", "nan_value"],
)
def test_non_finite_input_gives_zero_update_and_keeps_the_eigenvector(case, method):
    w = jnp.ones(3)
    params, loss = {
        "nan_hessian": (w, _nan_hessian),
        "nan_params": (w.at[0].set(jnp.nan), lambda p: jnp.sum(p**2)),
        "inf_value": (w, lambda p: jnp.sum(p**2) + jnp.inf),
        "nan_value": (w, lambda p: jnp.sum(p**2) * jnp.nan),
    }[case]
    tuner = cc.scale_by_sharpness(max_learning_rate=0.5, num_iters=4, method=method)
    state = tuner.init(w)
    updates, new_state = jax.jit(lambda s, p: tuner.update(-2 * w, s, p, value_fn=loss))(
        state, params
    )
    assert np.all(np.asarray(updates) == 0.0) and not np.signbit(np.asarray(updates)).any()
    assert float(new_state.learning_rate) == 0.0 and not bool(new_state.finite)
    np.testing.assert_array_equal(np.asarray(new_state.eigenvector), np.asarray(state.eigenvector))
    # The next good step is a normal one: λ_max(2I) = 2, η = σ/λ = 1, capped at 0.5.
    _, new_state = tuner.update(-2 * w, new_state, w, value_fn=lambda p: jnp.sum(p**2))
    assert bool(new_state.finite) and float(new_state.learning_rate) == 0.5


def test_zero_hessian_is_told_from_a_nan_one():
    # A linear objective has ∇²f = 0: "no curvature", a max_learning_rate step, finite.
    w = jnp.ones(3)
    tuner = cc.scale_by_sharpness(max_learning_rate=0.5, num_iters=4)
    state = tuner.init(w)
    updates, new_state = tuner.update(-w, state, w, value_fn=lambda p: jnp.sum(p))
    assert bool(new_state.finite) and abs(float(new_state.sharpness)) <= 1e-12
    np.testing.assert_allclose(updates, -0.5 * w)
    assert float(jnp.sum(new_state.eigenvector**2)) > 0  # a usable warm start is kept


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"sigma": -1.0}, ValueError, "sigma"),
        ({"sigma": np.nan}, ValueError, "sigma"),
        ({"max_learning_rate": -1.0}, ValueError, "max_learning_rate"),
        ({"max_learning_rate": np.nan}, ValueError, "max_learning_rate"),
        ({"method": "arnoldi"}, ValueError, "method"),
        ({"num_iters": 0}, ValueError, "num_iters"),
        ({"num_iters": 2.5}, TypeError, "num_iters"),
    ],
)
def test_arguments_are_checked_at_build(kwargs, error, argument):
    with pytest.raises(error, match=argument):
        cc.scale_by_sharpness(**kwargs)


def test_boundary_hyperparameters_are_accepted():
    cc.scale_by_sharpness(sigma=0.0, max_learning_rate=0.0)
    cc.scale_by_sharpness(sigma=np.float64(3.0), max_learning_rate=np.inf, method="power")


@pytest.mark.parametrize(
    ("name", "bad", "finite"),
    [("sigma", np.nan, False), ("sigma", -1.0, True), ("max_learning_rate", np.nan, False)],
)
def test_bad_traced_hyperparameter_gives_a_zero_step(name, bad, finite):
    tuner = optax.inject_hyperparams(cc.scale_by_sharpness, static_args=("num_iters",))(
        sigma=1.0, max_learning_rate=10.0, num_iters=4
    )
    w = jnp.linspace(-1.0, 1.0, 3)

    def loss(p):
        return jnp.sum(p**2)

    step = jax.jit(lambda w, s: tuner.update(-2 * w, s, w, value_fn=loss))
    state = tuner.init(w)
    good = state.hyperparams[name]
    state.hyperparams[name] = jnp.asarray(bad, good.dtype)
    updates, state = step(w, state)
    assert np.all(np.asarray(updates) == 0.0)
    assert float(state.inner_state.learning_rate) == 0.0
    assert bool(state.inner_state.finite) == finite
    state.hyperparams[name] = good
    _, state = step(w, state)
    assert float(state.inner_state.learning_rate) == pytest.approx(0.5, rel=1e-9)  # 1/λ, λ = 2
