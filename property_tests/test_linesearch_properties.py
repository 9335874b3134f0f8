"""Invariants of backtracking_linesearch over random quadratics and small MLPs.

- Armijo (with δ) holds at the accepted learning rate η, and fails at η / c₋ unless η is the
  initial guess (maximality); when nothing is accepted every trial fails.
- A more demanding c (or a smaller δ) never accepts a larger step.

Each property has a deterministic twin right below it on a fixed problem. Criteria are
re-evaluated in NumPy float64, with a tolerance of 1e-10 relative to the terms compared.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cdat_core import _tree, testing
from cdat_core.linesearch import backtracking_linesearch

MAX_STEPS = 30


def _quad(params, A, b):
    x = jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(params)])
    return 0.5 * jnp.sum(x * jnp.matmul(A, x)) + jnp.sum(b * x)


@functools.partial(jax.jit, static_argnames=("fun",))
def _search(fun, params, direction, args, value, slope, eta0, c, delta, factor):
    return backtracking_linesearch(
        fun,
        params,
        direction,
        *args,
        value=value,
        slope=slope,
        initial_learning_rate=eta0,
        c=c,
        delta=delta,
        decrease_factor=factor,
        max_steps=MAX_STEPS,
    )


@functools.partial(jax.jit, static_argnames=("fun",))
def _value_and_grad(fun, params, *args):
    return jax.value_and_grad(fun)(params, *args)


def _descent_direction(q, seed):
    """u = -P∇f(w) with a random positive diagonal P: a descent direction, not the gradient."""
    grad = q.matrix @ q.flatten(q.params) + q.vector  # ∇f(w) = Aw + b
    p = np.exp(np.random.default_rng(seed).uniform(-1.0, 1.0, grad.shape))
    return -p * grad, grad


hyperparameters = st.tuples(
    st.one_of(st.sampled_from([0.0, 1e-4, 0.5]), st.floats(0.0, 0.9)),  # c
    st.one_of(st.sampled_from([0.0, 1e-3]), st.floats(0.0, 0.1)),  # δ
    st.floats(0.3, 0.95),  # c₋
    st.floats(1e-3, 10.0),  # η₀
)


def check_armijo_and_maximality(q, seed, c, delta, factor, eta0):
    u, grad = _descent_direction(q, seed)
    w = q.flatten(q.params)
    A, b = q.matrix, q.vector

    def f(x):
        return 0.5 * x @ A @ x + b @ x

    value, slope = f(w), grad @ u

    def margin(eta):
        """f(w + ηu) - bound(η), and the scale of the terms compared."""
        bound = value + delta * abs(value) + c * eta * slope
        trial = f(w + eta * u)
        return trial - bound, 1e-10 * (abs(trial) + abs(value) + abs(eta * slope))

    res = _search(_quad, q.params, q.unflatten(u), (A, b), value, slope, eta0, c, delta, factor)
    eta, k = float(res.learning_rate), int(res.num_steps)
    if bool(res.accepted):
        np.testing.assert_allclose(eta, eta0 * factor ** (k - 1), rtol=1e-12)
        gap, tol = margin(eta)
        assert gap <= tol, "Armijo fails at the accepted learning rate"
        if k > 1:
            gap, tol = margin(eta / factor)
            assert gap > -tol, "Armijo holds at η / c₋: the accepted η is not maximal"
        np.testing.assert_allclose(float(res.value), f(w + eta * u), rtol=1e-10, atol=1e-12)
    else:
        assert eta == 0.0 and k == MAX_STEPS
        for j in range(MAX_STEPS):
            gap, tol = margin(eta0 * factor**j)
            assert gap > -tol, f"trial {j} satisfies Armijo but the search rejected it"


@given(testing.quadratic_problems(), st.integers(0, 2**31), hyperparameters)
def test_armijo_holds_at_accepted_and_fails_one_step_earlier(q, seed, hp):
    check_armijo_and_maximality(q, seed, *hp)


def test_armijo_holds_at_accepted_and_fails_one_step_earlier_twin():
    spd = testing.matrix_with_spectrum([40.0, 5.0, 1.0, 0.1, 0.05], seed=3)
    q = testing.quadratic(spd, seed=4)
    check_armijo_and_maximality(q, 5, 1e-4, 0.0, 0.8, 1.0)
    check_armijo_and_maximality(q, 5, 0.0, 1e-3, 0.9, 1.0)
    check_armijo_and_maximality(q, 5, 0.5, 0.0, 0.95, 10.0)  # budget runs out: all fail


def check_demanding_criterion_never_accepts_larger_step(fun, params, u, args, hp_pairs):
    value, grad = _value_and_grad(fun, params, *args)
    slope = _tree.vdot(grad, u)
    (c1, c2), (d1, d2), factor, eta0 = hp_pairs
    c_lo, c_hi = sorted((c1, c2))
    d_lo, d_hi = sorted((d1, d2))

    def lr(c, delta):
        res = _search(fun, params, u, args, value, slope, eta0, c, delta, factor)
        return float(res.learning_rate)  # 0 when not accepted

    assert lr(c_hi, d_lo) <= lr(c_lo, d_lo)
    assert lr(c_lo, d_lo) <= lr(c_lo, d_hi)


hp_pairs = st.tuples(
    st.tuples(st.floats(0.0, 0.9), st.floats(0.0, 0.9)),
    st.tuples(st.floats(0.0, 0.1), st.floats(0.0, 0.1)),
    st.floats(0.3, 0.95),
    st.floats(1e-3, 10.0),
)


@given(testing.quadratic_problems(), st.integers(0, 2**31), hp_pairs)
def test_larger_c_never_accepts_a_larger_step_on_quadratics(q, seed, hps):
    u, _ = _descent_direction(q, seed)
    args = (q.matrix, q.vector)
    check_demanding_criterion_never_accepts_larger_step(_quad, q.params, q.unflatten(u), args, hps)


@given(st.integers(0, 2**31), hp_pairs)
def test_larger_c_never_accepts_a_larger_step_on_mlps(seed, hps):
    m = testing.mlp((3, 5, 2), seed=seed)  # one architecture: one compilation
    _, grad = _value_and_grad(m.loss, m.params, m.inputs, m.targets)
    u = jax.tree.map(lambda g: -4.0 * g, grad)  # a long step, so the searches backtrack
    args = (m.inputs, m.targets)
    check_demanding_criterion_never_accepts_larger_step(m.loss, m.params, u, args, hps)


def test_larger_c_never_accepts_a_larger_step_twin():
    m = testing.mlp((3, 5, 2), seed=1)
    grad = jax.grad(m.loss)(m.params, m.inputs, m.targets)
    u = jax.tree.map(lambda g: -30.0 * g, grad)
    args = (m.inputs, m.targets)
    hps = ((1e-4, 0.5), (0.0, 1e-3), 0.8, 1.0)
    check_demanding_criterion_never_accepts_larger_step(m.loss, m.params, u, args, hps)
