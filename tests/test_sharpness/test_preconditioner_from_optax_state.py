"""preconditioner_from_optax_state: P reproduces the optax update u = -η P⁻¹ g."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc

PARAMS = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3), "none": None}


def _grads(step):
    rng = np.random.default_rng(step)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), PARAMS)


def _run(opt, steps):
    """Apply ``steps`` updates; return the last gradients, updates and state.

    optax's bias correction mixes a Python float with an int32 count, which JAX's strict
    dtype promotion (tests/conftest.py) rejects, so the optimizer itself runs under the
    standard promotion; the helper under test runs strict.
    """
    with jax.numpy_dtype_promotion("standard"):
        state = opt.init(PARAMS)
        for step in range(steps):
            grads = _grads(step)
            updates, state = opt.update(grads, state, PARAMS)
    return grads, updates, state


def _assert_update_is_preconditioned_gradient(updates, grads, pre, learning_rate):
    expected = jax.tree.map(lambda g, p: -learning_rate * g / p, grads, pre)
    for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(u, e, rtol=1e-12)


@pytest.mark.parametrize("steps", [1, 4])
def test_adam_with_bias_correction(steps):
    # b1 = 0: Adam's update is -η g / (sqrt(ν / (1 - b2^t)) + ε), so P is all of it.
    opt = optax.adam(0.1, b1=0.0, b2=0.95, eps=1e-3)
    grads, updates, state = _run(opt, steps)
    pre = cc.preconditioner_from_optax_state(state, eps=1e-3, b2=0.95)
    assert jax.tree.structure(pre) == jax.tree.structure(PARAMS)
    _assert_update_is_preconditioned_gradient(updates, grads, pre, 0.1)


def test_adam_without_b2_is_uncorrected():
    _, _, state = _run(optax.adam(0.1, b2=0.95), 3)
    nu = optax.tree.get(state, "nu")
    pre = cc.preconditioner_from_optax_state(state, eps=1e-8)
    np.testing.assert_allclose(pre["w"], np.sqrt(nu["w"]) + 1e-8, rtol=1e-14)
    corrected = cc.preconditioner_from_optax_state(state, eps=1e-8, b2=0.95)
    assert np.all(np.asarray(corrected["w"]) > np.asarray(pre["w"]))  # 1 - b2^t < 1


def test_rmsprop_default_eps_in_sqrt():
    opt = optax.rmsprop(0.01, decay=0.9, eps=1e-4)  # optax default: 1 / sqrt(ν + ε)
    grads, updates, state = _run(opt, 3)
    pre = cc.preconditioner_from_optax_state(state, eps=1e-4, eps_in_sqrt=True)
    _assert_update_is_preconditioned_gradient(updates, grads, pre, 0.01)


def test_paper_rmsprop_and_bias_corrected_rmsprop():
    # The paper's B.1 form sqrt(ν) + ε is optax's rmsprop with eps_in_sqrt=False.
    opt = optax.rmsprop(0.01, decay=0.9, eps=1e-4, eps_in_sqrt=False)
    grads, updates, state = _run(opt, 2)
    _assert_update_is_preconditioned_gradient(
        updates, grads, cc.preconditioner_from_optax_state(state, eps=1e-4), 0.01
    )
    opt = optax.rmsprop(0.01, decay=0.9, eps=1e-4, eps_in_sqrt=False, bias_correction=True)
    grads, updates, state = _run(opt, 2)
    pre = cc.preconditioner_from_optax_state(state, eps=1e-4, b2=0.9)
    _assert_update_is_preconditioned_gradient(updates, grads, pre, 0.01)


def test_found_inside_a_chain_and_finite_at_count_zero():
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    state = opt.init(PARAMS)
    pre = cc.preconditioner_from_optax_state(state, eps=1e-8, b2=0.999)
    np.testing.assert_array_equal(pre["w"], np.full((2, 3), 1e-8))  # ν = 0, no correction at t=0


def test_feeds_hessian_sharpness():
    # f(w) = ½ Σ d w²: the preconditioned Hessian is diag(d / P).
    d = {"w": jnp.array([[4.0, 1.0, 2.0], [0.5, 3.0, 1.0]]), "b": jnp.array([1.0, 1.0, 6.0])}
    f = lambda p: 0.5 * sum(jnp.sum(d[n] * p[n] ** 2) for n in ("w", "b"))  # noqa: E731
    _, _, state = _run(optax.adam(0.1, b2=0.9), 2)
    pre = cc.preconditioner_from_optax_state(state, eps=1e-8, b2=0.9)
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    pre = {"w": pre["w"], "b": pre["b"]}
    start = jax.tree.map(jnp.ones_like, params)
    res = cc.hessian_sharpness(f, params, v0=start, preconditioner=pre, method="power", rtol=1e-9)
    expected = max(float(jnp.max(d[n] / pre[n])) for n in ("w", "b"))
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues[0], expected, rtol=1e-8)


def test_errors():
    with pytest.raises(ValueError, match="exactly one 'nu'"):
        cc.preconditioner_from_optax_state(optax.sgd(0.1).init(PARAMS))
    two = optax.chain(optax.adam(0.1), optax.scale_by_rms())
    with pytest.raises(ValueError, match="found 2"):
        cc.preconditioner_from_optax_state(two.init(PARAMS))
    with pytest.raises(ValueError, match="count"):
        cc.preconditioner_from_optax_state(optax.rmsprop(0.1).init(PARAMS), b2=0.9)
