"""Direction of the hyper-gradient rule (eq 15) over random quadratics.

Along u = -P∇f(w) on a convex quadratic, φ(η) = f(w + ηu) is minimised at
η* = -∇f(w)ᵀu / uᵀAu. Below η* the next gradient still descends along u
(∇f(w + ηu)ᵀu = φ'(η) < 0), so the rule raises η; above η* it has turned against u and the
rule lowers η. A deterministic twin sits below the property.
"""

import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import cdat_core as cc
from cdat_core import testing


def check_hypergradient_direction(q, seed, ratio, beta):
    grad = q.matrix @ q.flatten(q.params) + q.vector  # ∇f(w) = Aw + b
    p = np.exp(np.random.default_rng(seed).uniform(-1.0, 1.0, grad.shape))
    u = -p * grad
    line_min = -(grad @ u) / (u @ q.matrix @ u)
    eta = ratio * line_min
    w_next = q.flatten(q.params) + eta * u
    next_grad = q.unflatten(q.matrix @ w_next + q.vector)
    new = float(
        cc.hypergradient_learning_rate(jnp.float64(eta), next_grad, q.unflatten(u), beta=beta)
    )
    if ratio < 1:
        assert new > eta, (new, eta)
    else:
        assert new < eta, (new, eta)
    assert new <= eta * (1 + beta) * (1 + 1e-12) and new >= 0.0  # |cosine| ≤ 1


@given(
    testing.quadratic_problems(),
    st.integers(0, 2**31),
    st.one_of(testing.floats(0.05, 0.95), testing.floats(1.05, 3.0)),
    testing.floats(1e-3, 1.0),
)
def test_raises_when_still_descending_and_lowers_when_turned(q, seed, ratio, beta):
    check_hypergradient_direction(q, seed, ratio, beta)


def test_raises_when_still_descending_and_lowers_when_turned_twin():
    spd = testing.matrix_with_spectrum([30.0, 4.0, 1.0, 0.2], seed=7)
    q = testing.quadratic(spd, seed=8)
    for ratio in (0.2, 0.9, 1.1, 2.0):
        check_hypergradient_direction(q, 9, ratio, 0.01)
