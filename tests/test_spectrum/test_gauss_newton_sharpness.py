"""gauss_newton_sharpness: top eigenvalues of JᵀH_ℓJ against the dense matrix (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import cdat_core as cc
from cdat_core import testing

MLP = testing.mlp((3, 6, 4), num_examples=10, seed=2)
LABELS = jnp.asarray(np.random.default_rng(0).integers(0, 4, 10))


def _squared(out):
    return 0.5 * jnp.mean(jnp.sum((out - MLP.targets) ** 2, axis=-1))


def _cross_entropy(out):
    logp = jax.nn.log_softmax(out)
    return -jnp.mean(jnp.take_along_axis(logp, LABELS[:, None], axis=1))


def _dense(loss, params):
    """Dense Gauss-Newton matrix JᵀH_ℓJ and Hessian, from jax.jacfwd and jax.hessian."""
    flat, unravel = ravel_pytree(params)
    shape = (MLP.inputs.shape[0], 4)

    @jax.jit
    def build(flat):
        outputs = MLP.predict(unravel(flat), MLP.inputs).ravel()
        jac = jax.jacfwd(lambda x: MLP.predict(unravel(x), MLP.inputs).ravel())(flat)
        h_out = jax.hessian(lambda o: loss(o.reshape(shape)))(outputs)
        hess = jax.hessian(lambda x: loss(MLP.predict(unravel(x), MLP.inputs)))(flat)
        return jac.T @ h_out @ jac, hess

    ggn, hess = build(flat)
    return np.asarray(ggn), np.asarray(hess)


TRACES = []


def _runner(loss):
    def run(p, x, key, pre):
        TRACES.append(loss.__name__)
        return cc.gauss_newton_sharpness(
            MLP.predict, loss, p, x, key=key, k=3, rtol=1e-10, num_iters=48, preconditioner=pre
        )

    return jax.jit(run)


RUN = {_cross_entropy: _runner(_cross_entropy)}


def test_top_eigenvalues_equal_the_dense_gauss_newton_matrix():
    # Softmax cross-entropy: a loss Hessian that couples the outputs (squared losses are
    # checked in the doctest, a linear model, and in test_sharding, against closed forms).
    loss = _cross_entropy
    ones = jax.tree.map(jnp.ones_like, MLP.params)
    run = RUN[loss]
    res = run(MLP.params, MLP.inputs, jax.random.key(0), ones)
    ggn, hess = _dense(loss, MLP.params)
    values = np.linalg.eigvalsh(ggn)[::-1]
    assert bool(res.converged) and int(res.num_iters) <= 48
    np.testing.assert_allclose(res.eigenvalues, values[:3], rtol=1e-8)
    # The Gauss-Newton matrix is not the Hessian here (the check above could fail).
    assert abs(np.linalg.eigvalsh(hess)[-1] - values[0]) > 1e-4 * values[0]
    # Preconditioned: P^-1/2 G P^-1/2.
    pre = jax.tree.map(lambda x: jnp.linspace(0.5, 2.0, x.size).reshape(x.shape), MLP.params)
    p_flat = np.asarray(ravel_pytree(pre)[0])
    scaled = ggn / np.sqrt(p_flat)[:, None] / np.sqrt(p_flat)[None, :]
    res = run(MLP.params, MLP.inputs, jax.random.key(1), pre)
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(scaled)[::-1][:3], rtol=1e-8)


def test_compiles_once():
    ones = jax.tree.map(jnp.ones_like, MLP.params)
    RUN[_cross_entropy](MLP.params, MLP.inputs, jax.random.key(0), ones)
    count = len(TRACES)
    moved = jax.tree.map(lambda w: 0.5 * w, MLP.params)
    res = RUN[_cross_entropy](moved, 2.0 * MLP.inputs, jax.random.key(4), ones)
    assert count >= 1 and len(TRACES) == count and bool(res.converged)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="key="):
        cc.gauss_newton_sharpness(MLP.predict, _squared, MLP.params, MLP.inputs)
    with pytest.raises(TypeError, match="loss must return a scalar"):
        cc.gauss_newton_sharpness(
            MLP.predict, lambda o: o, MLP.params, MLP.inputs, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="preconditioner"):
        cc.gauss_newton_sharpness(
            MLP.predict,
            _squared,
            MLP.params,
            MLP.inputs,
            key=jax.random.key(0),
            preconditioner=MLP.params[:1],
        )
