"""edge_of_stability against dense eigenvalues, plain and Adam-preconditioned."""

import jax
import jax.numpy as jnp
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


def test_edge_of_stability_plain_and_preconditioned():
    spd = testing.matrix_with_spectrum([8.0, 2.0, 1.0], seed=4)
    A = jnp.asarray(spd.matrix)

    def loss(w):
        return 0.5 * w @ A @ w

    w = jnp.ones(3)
    eos = cc.edge_of_stability(loss, w, learning_rate=0.25, key=jax.random.key(0), num_iters=3)
    assert float(eos.product) == pytest.approx(2.0, rel=1e-9) and not eos.preconditioned

    with jax.numpy_dtype_promotion("standard"):
        opt = cc.cdat(optax.adam(1.0, b2=0.99), sigma=2.0)
        state = opt.init(w)
        _, state = opt.update(A @ w, state, w, value_fn=loss)
        eos = cc.edge_of_stability(
            loss, w, opt_state=state, key=jax.random.key(1), num_iters=3, b2=0.99
        )
    nu_hat = (A @ w) ** 2  # one step: ν̂ = g² after bias correction
    p_inv_sqrt = 1.0 / jnp.sqrt(jnp.sqrt(nu_hat) + 1e-8)
    dense = jnp.linalg.eigvalsh(p_inv_sqrt[:, None] * A * p_inv_sqrt[None, :])[-1]
    assert eos.preconditioned
    # Lanczos stops at its default rtol = 1e-3 residual: the Ritz value is then within ~1e-6.
    assert float(eos.sharpness) == pytest.approx(float(dense), rel=1e-5)
    lr = float(optax.tree.get(state, "learning_rate"))
    assert float(eos.product) == pytest.approx(lr * float(dense), rel=1e-5)
