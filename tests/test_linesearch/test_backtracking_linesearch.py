"""backtracking_linesearch against a brute-force NumPy search, closed forms and bad input.

The brute force evaluates every trial η_k = η₀·c₋**k (k < max_steps) in NumPy float64, marks
those that satisfy f(w + η_k u) ≤ f(w) + δ|f(w)| + c·η_k·slope with a finite value, and takes
the largest: an independent formulation of "the largest accepted trial" (powers instead of the
loop's repeated multiplication, max over a set instead of a first exit).
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdat_core import _tree, testing
from cdat_core.linesearch import LinesearchResult, backtracking_linesearch

GRID = list(itertools.product([0.0, 1e-4, 0.5], [0.0, 1e-3], [0.8, 0.9]))  # c, δ, c₋


def brute_force(f_np, w, u, value, slope, eta0, c, delta, factor, max_steps):
    etas = eta0 * factor ** np.arange(max_steps)
    trials = np.array([f_np(w + eta * u) for eta in etas])
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(trials) & (trials <= value + delta * abs(value) + c * etas * slope)
    if not ok.any():
        return 0.0, value, max_steps, False, etas[-1]
    k = int(np.argmax(ok))  # the first accepted trial is the largest accepted η
    assert etas[k] == etas[ok].max()
    return etas[k], trials[k], k + 1, True, etas[k]


# ----------------------------------------------------------------------------------------------
# Problems: a quadratic with (A, b) as arguments (one compilation for all draws) and Rosenbrock.
# ----------------------------------------------------------------------------------------------


def _split(x):
    return {"a": x[:2], "b": {"c": x[2:].reshape(2, -1), "d": None}}


def _flat(tree):
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(tree)])


def quad(params, A, b):
    x = _flat(params)
    return 0.5 * jnp.sum(x * jnp.matmul(A, x)) + jnp.sum(b * x)


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_np(x):
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


@functools.partial(jax.jit, static_argnames=("fun", "max_steps"))
def search(fun, params, direction, *args, value, slope, eta0, c, delta, factor, max_steps):
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
        max_steps=max_steps,
    )


def _quadratic_cases():
    """(A, b, w, u) with u = -P∇f(w) for a random positive diagonal P (P = I half the time)."""
    cases = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        top = 10.0 ** rng.uniform(0.0, 2.0)
        eig = testing.log_spaced_spectrum(6, 10.0 ** rng.uniform(0.0, 3.0), top=top)
        if seed == 7:
            eig[-1] = -0.5  # indefinite: unbounded below along some directions
        A = testing.matrix_with_spectrum(eig, rng).matrix
        b, w = rng.standard_normal(6), rng.standard_normal(6)
        p = np.ones(6) if seed % 2 == 0 else np.exp(rng.uniform(-1.0, 1.0, 6))
        cases.append((A, b, w, -p * (A @ w + b)))
    return cases


QUADRATICS = _quadratic_cases()


@pytest.mark.parametrize(("c", "delta", "factor"), GRID)
def test_matches_brute_force_on_random_quadratics(c, delta, factor):
    outcomes = set()
    for (A, b, w, u), eta0 in itertools.product(QUADRATICS, [1.0, 0.05]):
        f_np = lambda x, A=A, b=b: float(0.5 * x @ A @ x + b @ x)  # noqa: E731
        value, slope = f_np(w), float((A @ w + b) @ u)
        expected = brute_force(f_np, w, u, value, slope, eta0, c, delta, factor, 30)
        res = search(
            quad,
            _split(jnp.asarray(w)),
            _split(jnp.asarray(u)),
            jnp.asarray(A),
            jnp.asarray(b),
            value=value,
            slope=slope,
            eta0=eta0,
            c=c,
            delta=delta,
            factor=factor,
            max_steps=30,
        )
        _assert_matches(res, expected)
        outcomes.add((bool(res.accepted), int(res.num_steps) > 1))
    assert (True, True) in outcomes  # some searches backtracked before accepting


@pytest.mark.parametrize("max_steps", [30, 80])
@pytest.mark.parametrize(("c", "delta", "factor"), GRID)
def test_matches_brute_force_on_rosenbrock(c, delta, factor, max_steps):
    rng = np.random.default_rng(0)
    accepted = []
    for _ in range(5):
        w = rng.uniform(-1.5, 1.5, 4)
        g = np.asarray(jax.grad(rosenbrock)(jnp.asarray(w)))
        u = -g
        value, slope = rosenbrock_np(w), float(g @ u)
        expected = brute_force(rosenbrock_np, w, u, value, slope, 1.0, c, delta, factor, max_steps)
        res = search(
            rosenbrock,
            jnp.asarray(w),
            jnp.asarray(u),
            value=value,
            slope=slope,
            eta0=1.0,
            c=c,
            delta=delta,
            factor=factor,
            max_steps=max_steps,
        )
        _assert_matches(res, expected)
        accepted.append(bool(res.accepted))
    if max_steps == 80:
        assert all(accepted)  # c₋**79 < 1e-3: every search ends in an accepted step
    elif factor == 0.8:
        assert not all(accepted)  # 0.8**29 > 1e-3: the budget runs out on some points


def _assert_matches(res, expected):
    eta, value, num_steps, accepted, smallest_tried = expected
    assert bool(res.accepted) == accepted
    assert int(res.num_steps) == num_steps
    np.testing.assert_allclose(float(res.learning_rate), eta, rtol=1e-12)
    np.testing.assert_allclose(float(res.smallest_tried), smallest_tried, rtol=1e-12)
    np.testing.assert_allclose(float(res.value), value, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Closed form on f(w) = ½λw² with u = -f'(w): the criterion is x² - 2(1-c)x - δ ≤ 0, x = ηλ.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("c", "delta", "factor"), GRID)
def test_closed_form_on_one_dimensional_quadratic(c, delta, factor):
    lam, w = 7.0, 1.3
    u = -lam * w
    x_max = (1.0 - c) + np.sqrt((1.0 - c) ** 2 + delta)  # largest accepted ηλ
    k = int(np.ceil(np.log(lam / x_max) / np.log(1.0 / factor)))  # first c₋**k ≤ x_max/λ
    res = search(
        lambda p: 0.5 * lam * jnp.sum(p**2),
        jnp.asarray([w]),
        jnp.asarray([u]),
        value=0.5 * lam * w**2,
        slope=w * lam * u,
        eta0=1.0,
        c=c,
        delta=delta,
        factor=factor,
        max_steps=30,
    )
    assert bool(res.accepted)
    assert int(res.num_steps) == k + 1
    np.testing.assert_allclose(float(res.learning_rate), factor**k, rtol=1e-12)
    assert float(res.learning_rate) * lam <= x_max < float(res.learning_rate) * lam / factor


def test_armijo_holds_at_accepted_and_fails_one_step_earlier():
    """Deterministic twin of the property test: Armijo at η, not at η / c₋."""
    A, b, w, u = QUADRATICS[0]
    f_np = lambda x: float(0.5 * x @ A @ x + b @ x)  # noqa: E731
    value, slope = f_np(w), float((A @ w + b) @ u)
    c, factor = 1e-4, 0.5
    res = search(
        quad,
        _split(jnp.asarray(w)),
        _split(jnp.asarray(u)),
        jnp.asarray(A),
        jnp.asarray(b),
        value=value,
        slope=slope,
        eta0=1.0,
        c=c,
        delta=0.0,
        factor=factor,
        max_steps=30,
    )
    eta = float(res.learning_rate)
    assert bool(res.accepted) and int(res.num_steps) > 1
    assert f_np(w + eta * u) <= value + c * eta * slope
    assert f_np(w + eta / factor * u) > value + c * eta / factor * slope


def test_negative_value_uses_relative_decrease_of_the_absolute_value():
    """δ relaxes the bound to f(w) + δ|f(w)|, also when f(w) < 0.

    f(p) = -1 + ½p² at w = 1 (f(w) = -0.5) along u = -f'(w) = -1: the trial η = 2.1 gives
    f = -0.395. The bound f(w) + δ|f(w)| = -0.35 for δ = 0.3 accepts it; the literal
    (1 + δ)f(w) = -0.65 would not (it is stricter than δ = 0). With δ = 0, η = 1.05 is taken.
    """
    fun = lambda p: -1.0 + 0.5 * jnp.sum(p**2)  # noqa: E731
    w = jnp.asarray([1.0])
    kw = dict(value=-0.5, slope=-1.0, eta0=2.1, c=0.0, factor=0.5, max_steps=5)
    res = search(fun, w, -w, delta=0.3, **kw)
    assert bool(res.accepted) and int(res.num_steps) == 1
    np.testing.assert_allclose(float(res.learning_rate), 2.1)
    assert float(res.value) > (1 + 0.3) * -0.5  # the literal form would have rejected it
    res = search(fun, w, -w, delta=0.0, **kw)
    assert int(res.num_steps) == 2
    np.testing.assert_allclose(float(res.learning_rate), 1.05)


# ----------------------------------------------------------------------------------------------
# Non-finite trials and bad input.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_trial_values_count_as_failures(bad):
    # f = ½(w - 3)² for w < 2, non-finite beyond: from w = 0 along u = 6 the steps η ≥ 1/3
    # land beyond 2. optax would accept -inf as sufficient decrease; here it is a failure.
    fun = lambda p: jnp.sum(jnp.where(p < 2.0, 0.5 * (p - 3.0) ** 2, bad))  # noqa: E731
    res = search(
        fun,
        jnp.zeros(1),
        jnp.full(1, 3.0),
        value=4.5,
        slope=-9.0,
        eta0=1.0,
        c=1e-4,
        delta=0.0,
        factor=0.8,
        max_steps=30,
    )
    # 0.8**k·3 < 2 first at k = 2 (0.64·3 = 1.92).
    assert bool(res.accepted) and int(res.num_steps) == 3
    np.testing.assert_allclose(float(res.learning_rate), 0.64, rtol=1e-12)
    assert np.isfinite(float(res.value))


def test_all_trials_non_finite_gives_zero_step():
    fun = lambda p: jnp.sum(jnp.where(p < 1e-9, 0.5 * p**2, jnp.nan))  # noqa: E731
    res = search(
        fun,
        jnp.zeros(1),
        jnp.ones(1),
        value=0.0,
        slope=-1.0,
        eta0=1.0,
        c=0.0,
        delta=0.0,
        factor=0.5,
        max_steps=7,
    )
    assert not bool(res.accepted)
    assert float(res.learning_rate) == 0.0
    assert int(res.num_steps) == 7  # every trial was evaluated
    assert float(res.value) == 0.0  # the value passed in: the step is zero
    assert float(res.smallest_tried) == 0.5**6  # the last trial, for the next search


def _search_simple(value, slope, **kw):
    fun = lambda p: 0.5 * jnp.sum(p**2)  # noqa: E731
    kw = {"eta0": 1.0, "c": 0.0, "delta": 0.0, "factor": 0.8, "max_steps": 10} | kw
    return search(fun, jnp.ones(3), -jnp.ones(3), value=value, slope=slope, **kw)


@pytest.mark.parametrize("slope", [0.0, 3.0, np.inf, np.nan])
def test_ascent_or_flat_direction_is_not_accepted(slope):
    res = _search_simple(1.5, slope, delta=1e-3)
    assert not bool(res.accepted)
    assert float(res.learning_rate) == 0.0
    assert int(res.num_steps) == 0  # fun is never evaluated
    assert float(res.value) == 1.5
    assert float(res.smallest_tried) == 0.0  # nothing tried


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_current_value_is_not_accepted(value):
    res = _search_simple(value, -3.0)
    assert not bool(res.accepted)
    assert float(res.learning_rate) == 0.0  # never NaN
    assert int(res.num_steps) == 0
    # The value returned is f at w + 0·u, the one passed in.
    np.testing.assert_equal(float(res.value), value)


@pytest.mark.parametrize(
    "kw",
    [
        {"eta0": 0.0},
        {"eta0": -1.0},
        {"eta0": np.inf},
        {"factor": 1.0},
        {"factor": 1.5},
        {"factor": 0.0},
        {"c": np.nan},
        {"c": -1.0},
        {"delta": np.inf},
        {"delta": -0.5},
    ],
)
def test_traced_out_of_range_hyperparameters_do_not_start(kw):
    res = _search_simple(1.5, -3.0, **kw)  # traced under jit: no error, a defined result
    assert not bool(res.accepted)
    assert float(res.learning_rate) == 0.0
    assert int(res.num_steps) == 0


@pytest.mark.parametrize("params", [{}, None, [], {"a": None}])
def test_empty_params_give_a_defined_result(params):
    fun = lambda p: jnp.asarray(2.0)  # noqa: E731
    slope = _tree.vdot(params, params)  # 0 for an empty tree
    for f in (backtracking_linesearch, jax.jit(backtracking_linesearch, static_argnums=0)):
        res = f(fun, params, params, value=2.0, slope=slope)
        assert not bool(res.accepted)
        assert float(res.learning_rate) == 0.0
        assert int(res.num_steps) == 0
        assert float(res.value) == 2.0


def test_none_subtrees_and_extra_args():
    params = {"w": jnp.array([1.0, 2.0]), "skip": None}

    def fun(p, scale, shift):
        return scale * jnp.sum((p["w"] - shift) ** 2)

    res = backtracking_linesearch(
        fun, params, {"w": -params["w"], "skip": None}, 2.0, 0.0, value=10.0, slope=-20.0
    )
    # f(w - ηw) = 10(1-η)²: η = 1 gives 0 ≤ 10.
    assert bool(res.accepted) and int(res.num_steps) == 1
    assert float(res.value) == 0.0


def test_result_is_a_named_tuple_with_documented_dtypes():
    res = _search_simple(1.5, -3.0)
    assert isinstance(res, LinesearchResult)
    fields = ("learning_rate", "value", "num_steps", "accepted", "smallest_tried")
    assert res._fields == fields
    assert res.learning_rate.dtype == jnp.float64
    assert res.smallest_tried.dtype == jnp.float64
    assert res.value.dtype == jnp.float64
    assert res.num_steps.dtype == jnp.int32
    assert res.accepted.dtype == jnp.bool_


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_low_precision_params(dtype):
    w = jnp.asarray([1.0, -2.0], dtype)
    fun = lambda p: jnp.sum(p.astype(jnp.float32) ** 2).astype(dtype)  # noqa: E731
    res = backtracking_linesearch(
        fun,
        w,
        -2 * w,
        value=fun(w),
        slope=jnp.asarray(-20.0, dtype),
        c=1e-4,
        decrease_factor=0.5,
    )
    assert res.learning_rate.dtype == jnp.float32  # at least float32
    assert res.value.dtype == dtype  # what fun returns
    assert bool(res.accepted) and float(res.learning_rate) == 0.5 and float(res.value) == 0.0


# ----------------------------------------------------------------------------------------------
# Errors at trace time.
# ----------------------------------------------------------------------------------------------

FUN = lambda p: jnp.sum(p**2)  # noqa: E731
W = jnp.ones(3)


def test_integer_params_raise():
    with pytest.raises(TypeError, match="floating"):
        backtracking_linesearch(FUN, jnp.ones(3, jnp.int32), -W, value=3.0, slope=-1.0)


def test_mismatched_direction_raises():
    with pytest.raises(ValueError, match="structure"):
        backtracking_linesearch(FUN, W, {"a": -W}, value=3.0, slope=-1.0)
    with pytest.raises(ValueError, match="shape"):
        backtracking_linesearch(FUN, W, -jnp.ones(4), value=3.0, slope=-1.0)


def test_non_scalar_objective_raises():
    with pytest.raises(TypeError, match="scalar"):
        backtracking_linesearch(lambda p: p**2, W, -W, value=3.0, slope=-1.0)


@pytest.mark.parametrize(
    ("max_steps", "error"), [(0, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_max_steps_raises(max_steps, error):
    with pytest.raises(error, match="max_steps"):
        backtracking_linesearch(FUN, W, -W, value=3.0, slope=-1.0, max_steps=max_steps)


def test_traced_max_steps_raises():
    with pytest.raises(TypeError, match="structural"):
        jax.jit(lambda n: backtracking_linesearch(FUN, W, -W, value=3.0, slope=-1.0, max_steps=n))(
            3
        )


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("initial_learning_rate", 0.0),
        ("initial_learning_rate", np.inf),
        ("c", -0.1),
        ("delta", np.nan),
        ("decrease_factor", 1.0),
        ("decrease_factor", 0.0),
    ],
)
def test_concrete_out_of_range_hyperparameters_raise(name, bad):
    with pytest.raises(ValueError, match=name):
        backtracking_linesearch(FUN, W, -W, value=3.0, slope=-1.0, **{name: bad})


def test_non_scalar_hyperparameter_raises():
    with pytest.raises(ValueError, match="scalar"):
        backtracking_linesearch(FUN, W, -W, value=3.0, slope=-1.0, c=jnp.zeros(2))


# ----------------------------------------------------------------------------------------------
# jit once, vmap.
# ----------------------------------------------------------------------------------------------


def test_compiles_once_for_new_values():
    traces = []

    @jax.jit
    def run(w, u, value, slope, eta0, c, delta, factor):
        traces.append(None)
        return backtracking_linesearch(
            quad,
            w,
            u,
            jnp.eye(6),
            jnp.zeros(6),
            value=value,
            slope=slope,
            initial_learning_rate=eta0,
            c=c,
            delta=delta,
            decrease_factor=factor,
        )

    rng = np.random.default_rng(0)
    results = []
    for c, delta, factor in [(1e-4, 0.0, 0.8), (0.5, 1e-3, 0.9), (0.0, 0.0, 0.5)]:
        w = rng.standard_normal(6)
        u = -3.0 * w  # f = ½|w|²: η = 1 overshoots, so each setting backtracks differently
        value, slope = 0.5 * w @ w, float(w @ u)
        res = run(
            _split(jnp.asarray(w)), _split(jnp.asarray(u)), value, slope, 1.0, c, delta, factor
        )
        results.append(res)
    assert len(traces) == 1
    assert len({float(r.learning_rate) for r in results}) == 3  # the new values were used


def test_vmap_over_a_batch_of_quadratics():
    As = jnp.stack([jnp.asarray(A) for A, *_ in QUADRATICS])
    bs = jnp.stack([jnp.asarray(b) for _, b, *_ in QUADRATICS])
    ws = jnp.stack([jnp.asarray(w) for *_, w, _ in QUADRATICS])
    us = jnp.stack([jnp.asarray(u) for *_, u in QUADRATICS])
    values = jax.vmap(lambda w, A, b: quad(_split(w), A, b))(ws, As, bs)
    slopes = jnp.einsum("bi,bi->b", jnp.einsum("bij,bj->bi", As, ws) + bs, us)
    c = jnp.linspace(0.0, 0.5, len(QUADRATICS))

    def one(w, u, A, b, value, slope, c):
        return backtracking_linesearch(
            quad, _split(w), _split(u), A, b, value=value, slope=slope, c=c, max_steps=20
        )

    batched = jax.jit(jax.vmap(one))(ws, us, As, bs, values, slopes, c)
    assert batched.learning_rate.shape == (len(QUADRATICS),)
    single_fn = jax.jit(one)
    for i in range(len(QUADRATICS)):
        single = single_fn(ws[i], us[i], As[i], bs[i], values[i], slopes[i], c[i])
        for got, want in zip(batched, single, strict=True):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=1e-12)
    # Members stopped at different trials, so the batched loop had to keep finished ones.
    assert len(set(np.asarray(batched.num_steps).tolist())) > 1
