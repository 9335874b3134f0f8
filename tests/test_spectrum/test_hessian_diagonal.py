"""hessian_diagonal: Hutchinson's diagonal against jax.hessian (float64), pytree-shaped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import cdat_core as cc
from cdat_core import testing

MLP = testing.mlp((3, 4, 2), num_examples=8, seed=0)


TRACES = []


@jax.jit
def _mlp_diagonal(params, pre, key):
    TRACES.append(1)
    return cc.hessian_diagonal(
        MLP.loss, params, MLP.inputs, MLP.targets, key=key, num_probes=128, preconditioner=pre
    )


def _dense_hessian(params):
    flat, unravel = ravel_pytree(params)
    f = lambda x: MLP.loss(unravel(x), MLP.inputs, MLP.targets)  # noqa: E731
    return np.asarray(jax.jit(jax.hessian(f))(flat))


def test_separable_function_is_exact_with_zero_error():
    f = lambda w: jnp.sum(jnp.cosh(w["a"])) + jnp.sum(w["b"]["c"] ** 4)  # noqa: E731
    params = {"a": jnp.linspace(-1.0, 1.0, 3), "b": {"c": jnp.ones((2, 2)), "d": None}}
    out = cc.hessian_diagonal(f, params, key=jax.random.key(0), num_probes=4)
    np.testing.assert_allclose(out.diagonal["a"], np.cosh(np.linspace(-1, 1, 3)), rtol=1e-13)
    np.testing.assert_allclose(out.diagonal["b"]["c"], np.full((2, 2), 12.0), rtol=1e-13)
    assert out.diagonal["b"]["d"] is None and out.standard_error["b"]["d"] is None
    assert all(float(jnp.max(e)) == 0.0 for e in jax.tree.leaves(out.standard_error))
    assert int(out.num_matvecs) == 4


def test_mlp_diagonal_within_its_stated_error():
    hess = _dense_hessian(MLP.params)
    ones = jax.tree.map(jnp.ones_like, MLP.params)
    out = _mlp_diagonal(MLP.params, ones, jax.random.key(0))
    est, _ = ravel_pytree(out.diagonal)
    se, _ = ravel_pytree(out.standard_error)
    exact = np.diag(hess)
    assert jax.tree.structure(out.diagonal) == jax.tree.structure(MLP.params)
    assert np.all(np.abs(np.asarray(est) - exact) <= 4.5 * np.asarray(se))
    # The stated error estimates sqrt(Σ_{j≠i} H_ij² / N) entry by entry.
    true_se = np.sqrt((np.sum(hess**2, axis=1) - exact**2) / 128)
    ratio = np.asarray(se) / true_se
    assert 0.7 < np.median(ratio) < 1.3 and np.all((ratio > 0.5) & (ratio < 1.6))
    # Preconditioned: the diagonal of P^-1/2 H P^-1/2 is diag(H) / P (same probes).
    pre = jax.tree.map(lambda w: 2.0 * jnp.ones_like(w), MLP.params)
    halved = _mlp_diagonal(MLP.params, pre, jax.random.key(0))
    testing.assert_tree_allclose(
        halved.diagonal, jax.tree.map(lambda d: d / 2, out.diagonal), rtol=1e-12
    )


def test_compiles_once():
    ones = jax.tree.map(jnp.ones_like, MLP.params)
    _mlp_diagonal(MLP.params, ones, jax.random.key(0))
    count = len(TRACES)
    moved = jax.tree.map(lambda w: 1.5 * w, MLP.params)
    out = _mlp_diagonal(moved, jax.tree.map(lambda w: 2.0 * w, ones), jax.random.key(1))
    assert count >= 1 and len(TRACES) == count
    assert np.all(np.isfinite(ravel_pytree(out.diagonal)[0]))


def test_float32_params_give_float32_leaves():
    f = lambda w: jnp.sum(w**2)  # noqa: E731
    out = cc.hessian_diagonal(f, jnp.ones(3, jnp.float32), key=jax.random.key(0), num_probes=2)
    assert out.diagonal.dtype == jnp.float32 and out.standard_error.dtype == jnp.float32
    np.testing.assert_array_equal(out.diagonal, 2.0)


def test_bad_arguments_are_named():
    f, w, key = (lambda w: jnp.sum(w**4)), jnp.ones(3), jax.random.key(0)
    with pytest.raises(ValueError, match="num_probes must be at least 2"):
        cc.hessian_diagonal(f, w, key=key, num_probes=1)
    with pytest.raises(TypeError, match="num_probes"):
        cc.hessian_diagonal(f, w, key=key, num_probes=2.5)
    with pytest.raises(TypeError, match="key="):
        cc.hessian_diagonal(f, w, key=None)
    with pytest.raises(ValueError, match="preconditioner"):
        cc.hessian_diagonal(f, w, key=key, preconditioner=jnp.ones(2))
