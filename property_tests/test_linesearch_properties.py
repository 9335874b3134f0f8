"""Invariants of backtracking_linesearch and initial_learning_rate.

- Armijo (with δ) holds at the accepted learning rate η, and fails at η / c₋ unless η is the
  initial guess (maximality); when nothing is accepted every trial fails, and
  ``smallest_tried`` is the last trial.
- A more demanding c (or a smaller δ) never accepts a larger step.
- Consecutive failed searches of K trials, chained by initial_learning_rate, accept exactly
  the learning rate one search with an unbounded budget accepts, after ⌊k/K⌋ zero steps.
- initial_learning_rate is total: finite and in [0, η_max] for any input, NaN and inf included
  (traced), and equal to its formula on valid inputs.

Each property has a deterministic twin right below it on a fixed problem. Criteria are
re-evaluated in NumPy float64, with a tolerance of 1e-10 relative to the terms compared.
Strategies draw no subnormal numbers where a property compares values exactly (the CPU may
flush them to zero), and no NaN or inf except where the property is about them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cdat_core import _tree, testing
from cdat_core.linesearch import backtracking_linesearch, initial_learning_rate

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


def _floats(lo, hi):
    """Floats in [lo, hi]: no NaN, no inf, no subnormal."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


hyperparameters = st.tuples(
    st.one_of(st.sampled_from([0.0, 1e-4, 0.5]), _floats(0.0, 0.9)),  # c
    st.one_of(st.sampled_from([0.0, 1e-3]), _floats(0.0, 0.1)),  # δ
    _floats(0.3, 0.95),  # c₋
    _floats(1e-3, 10.0),  # η₀
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
        np.testing.assert_allclose(float(res.smallest_tried), eta0 * factor ** (k - 1), rtol=1e-12)
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
    st.tuples(_floats(0.0, 0.9), _floats(0.0, 0.9)),
    st.tuples(_floats(0.0, 0.1), _floats(0.0, 0.1)),
    _floats(0.3, 0.95),
    _floats(1e-3, 10.0),
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


# ----------------------------------------------------------------------------------------------
# Consecutive failed searches act as one search with an unbounded budget.
# ----------------------------------------------------------------------------------------------

LONG = 600  # trials of the reference search: 0.95**599 · 1e6 < 2 for every drawn λ


@functools.partial(jax.jit, static_argnames=("max_steps",))
def _chained(lam, c, factor, max_steps):
    """Searches of ``max_steps`` trials on f = ½λw² from w = 1 along u = -λ, chained by
    initial_learning_rate, until one accepts: (learning rate, zero steps, its num_steps)."""
    fun = lambda w: 0.5 * lam * jnp.sum(w**2)  # noqa: E731
    w = jnp.ones(1)
    u, value, slope = -lam * w, 0.5 * lam, -(lam**2)

    def body(carry):
        previous, smallest, failures, _ = carry
        eta0 = initial_learning_rate(previous, smallest_tried=smallest, decrease_factor=factor)
        res = backtracking_linesearch(
            fun, w, u, value=value, slope=slope, initial_learning_rate=eta0, c=c,
            decrease_factor=factor, max_steps=max_steps,
        )  # fmt: skip
        failed = (~res.accepted).astype(jnp.int32)
        return res.learning_rate, res.smallest_tried, failures + failed, res.num_steps

    def cond(carry):
        return (carry[0] == 0.0) & (carry[2] < LONG)

    zero = jnp.zeros((), jnp.float64)
    eta, _, failures, num_steps = jax.lax.while_loop(
        cond, body, (zero, zero, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    )
    single = backtracking_linesearch(
        fun, w, u, value=value, slope=slope, c=c, decrease_factor=factor, max_steps=LONG
    )
    return eta, failures, num_steps, single


def check_chained_searches_equal_one_long_search(lam, c, factor, max_steps):
    eta, failures, num_steps, single = _chained(lam, c, factor, max_steps)
    assert bool(single.accepted)
    k = int(single.num_steps) - 1  # the accepted trial of the long search
    # Same trials in the same order (η ← c₋·η by one multiplication in both): equal bits.
    assert float(eta) == float(single.learning_rate)
    assert int(failures) == k // max_steps
    assert int(num_steps) == k % max_steps + 1


@given(
    _floats(0.0, 6.0),  # log10 λ
    st.sampled_from([0.0, 1e-4, 0.5]),
    _floats(0.5, 0.95),
    st.sampled_from([1, 3, 8, 30]),
)
def test_chained_failed_searches_equal_one_long_search(log_lam, c, factor, max_steps):
    check_chained_searches_equal_one_long_search(10.0**log_lam, c, factor, max_steps)


def test_chained_failed_searches_equal_one_long_search_twin():
    # 5e3·w² of the issue (λ = 1e4): 0.8**39 is the first η < 2e-4, after one failed search.
    check_chained_searches_equal_one_long_search(1e4, 0.0, 0.8, 30)
    check_chained_searches_equal_one_long_search(1e6, 0.5, 0.95, 8)


# ----------------------------------------------------------------------------------------------
# initial_learning_rate: total, and equal to its formula.
# ----------------------------------------------------------------------------------------------

_guess = jax.jit(
    lambda previous, increase, max_lr, smallest, decrease: initial_learning_rate(
        previous,
        increase_factor=increase,
        max_learning_rate=max_lr,
        smallest_tried=smallest,
        decrease_factor=decrease,
    )
)
_anything = st.floats(allow_nan=True, allow_infinity=True)  # subnormals included


@given(_anything, _anything, _anything, _anything, _anything)
def test_initial_learning_rate_is_finite_and_within_max_for_any_input(
    previous, increase, max_lr, smallest, decrease
):
    got = float(_guess(previous, increase, max_lr, smallest, decrease))
    assert np.isfinite(got)
    if np.isfinite(max_lr) and max_lr >= np.finfo(np.float64).tiny:  # else documented: 0
        assert 0.0 < got <= max_lr
    else:
        assert got == 0.0


@given(
    st.one_of(st.just(0.0), _floats(1e-300, 1e300)),
    st.one_of(st.just(np.inf), _floats(1.0, 1e6)),
    _floats(1e-6, 1e6),
    st.one_of(st.just(0.0), _floats(1e-300, 1e300)),
    _floats(0.01, 0.99),
)
def test_initial_learning_rate_equals_its_formula(previous, increase, max_lr, smallest, decrease):
    tiny = np.finfo(np.float64).tiny
    if previous > 0:
        want = min(increase * previous, max_lr)
    elif smallest > 0 and decrease * smallest >= tiny:
        want = min(decrease * smallest, max_lr)
    else:
        want = max_lr
    assert float(_guess(previous, increase, max_lr, smallest, decrease)) == want


def test_initial_learning_rate_equals_its_formula_twin():
    assert float(_guess(0.25, 4.0, 1.0, 0.0, 0.8)) == 1.0
    assert float(_guess(0.1, 4.0, 1.0, 0.0, 0.8)) == 4.0 * 0.1
    assert float(_guess(0.0, 4.0, 1.0, 0.01, 0.8)) == 0.8 * 0.01
    assert float(_guess(0.0, 4.0, 1.0, 1e-308, 0.01)) == 1.0  # 1e-310 is subnormal: restart
    assert float(_guess(np.nan, np.nan, np.nan, np.nan, np.nan)) == 0.0
