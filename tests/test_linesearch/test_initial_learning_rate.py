"""initial_learning_rate: min(c₊·η_{t−1}, η_max), or below the smallest trial after a failure.

η_{t,0} = min(c₊·η_{t−1}, η_max) after an accepted step, min(c₋·η̌_{t−1}, η_max) after a failed
search whose smallest trial was η̌_{t−1} (while that is a normal number), η_max otherwise.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdat_core.linesearch import backtracking_linesearch, initial_learning_rate


@pytest.mark.parametrize("previous", [1e-6, 0.01, 0.2, 0.25, 0.3, 1.0, 7.0])
@pytest.mark.parametrize("increase", [1.0, 1.5, 4.0, 1e300])
@pytest.mark.parametrize("max_lr", [1.0, 100.0])
def test_min_of_increased_previous_and_max(previous, increase, max_lr):
    previous = jnp.asarray(previous, jnp.float64)
    got = initial_learning_rate(previous, increase_factor=increase, max_learning_rate=max_lr)
    assert got.dtype == jnp.float64
    assert float(got) == min(increase * float(previous), max_lr)


@pytest.mark.parametrize("previous", [1e-300, 0.5, 3.0])
def test_infinite_increase_factor_starts_from_max(previous):
    got = initial_learning_rate(previous, increase_factor=math.inf, max_learning_rate=2.0)
    assert float(got) == 2.0


@pytest.mark.parametrize("increase", [4.0, math.inf])
@pytest.mark.parametrize("previous", [0.0, -0.0, -1.0, 1e-310, np.nan, np.inf, -np.inf])
def test_failed_or_invalid_previous_restarts_from_max(previous, increase):
    # 0 is what a failed search returns; inf·0 would be NaN, optax's 4·0 stays 0 forever.
    previous = jnp.asarray(previous, jnp.float64)
    got = initial_learning_rate(previous, increase_factor=increase, max_learning_rate=0.7)
    assert float(got) == 0.7


# ----------------------------------------------------------------------------------------------
# Continuation below the smallest trial of a failed search.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("smallest", "decrease", "max_lr", "expected"),
    [
        (0.01, 0.5, 1.0, 0.005),
        (0.8**29, 0.8, 1.0, 0.8**30),
        (1e-250, 0.9, 1.0, 0.9 * 1e-250),
        (3.0, 0.5, 1.0, 1.0),  # η_max lowered since: capped
        (0.5, 0.5, 0.1, 0.1),
    ],
)
@pytest.mark.parametrize("increase", [1.0, 4.0, math.inf])
def test_failed_search_continues_below_its_smallest_trial(
    smallest, decrease, max_lr, expected, increase
):
    got = initial_learning_rate(
        jnp.asarray(0.0, jnp.float64),
        increase_factor=increase,
        max_learning_rate=max_lr,
        smallest_tried=smallest,
        decrease_factor=decrease,
    )
    assert float(got) == expected


@pytest.mark.parametrize("previous", [1e-3, 0.2])
def test_accepted_previous_ignores_smallest_tried(previous):
    got = initial_learning_rate(
        jnp.asarray(previous, jnp.float64),
        increase_factor=4.0,
        smallest_tried=1e-9,
        decrease_factor=0.5,
    )
    assert float(got) == 4.0 * previous


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_continuation_restarts_from_max_below_the_smallest_normal_number(dtype):
    tiny = float(jnp.finfo(dtype).tiny)
    kw = {"decrease_factor": 0.5, "max_learning_rate": 0.3}
    zero = jnp.zeros((), dtype)
    still_normal = initial_learning_rate(zero, smallest_tried=jnp.asarray(2 * tiny, dtype), **kw)
    assert float(still_normal) == tiny
    underflow = initial_learning_rate(zero, smallest_tried=jnp.asarray(tiny, dtype), **kw)
    assert float(underflow) == pytest.approx(0.3, rel=1e-7)


@pytest.mark.parametrize("smallest", [0.0, -1e-3, np.nan, np.inf])
def test_unusable_smallest_tried_restarts_from_max(smallest):
    got = initial_learning_rate(0.0, smallest_tried=smallest, max_learning_rate=0.7)
    assert float(got) == pytest.approx(0.7)


def test_consecutive_failed_searches_continue_one_geometric_sequence():
    """K-trial searches on f = 5e3·w² from η_max = 1 try c₋^k for k = 0, 1, 2, ... without gaps.

    u = -f'(1) = -1e4: f decreases iff η·1e4 < 2, i.e. η < 2e-4. With c₋ = 0.5 the first such
    trial is 0.5^13 = 1.22e-4 (0.5^12 = 2.44e-4 overshoots): with K = 5, searches 0 and 1 fail
    (k = 0..4, 5..9) and search 2 accepts at its 4th trial (k = 13).
    """
    fun = lambda w: 5e3 * jnp.sum(w**2)  # noqa: E731
    w = jnp.ones(1)
    value, grad = jax.value_and_grad(fun)(w)
    u = -grad
    previous, smallest = jnp.asarray(0.0), jnp.asarray(0.0)
    outcomes = []
    for _ in range(3):
        eta0 = initial_learning_rate(
            previous, smallest_tried=smallest, decrease_factor=0.5, max_learning_rate=1.0
        )
        res = backtracking_linesearch(
            fun, w, u, value=value, slope=jnp.sum(grad * u), initial_learning_rate=eta0,
            decrease_factor=0.5, max_steps=5,
        )  # fmt: skip
        outcomes.append((float(eta0), bool(res.accepted), int(res.num_steps)))
        previous, smallest = res.learning_rate, res.smallest_tried
    assert outcomes == [(1.0, False, 5), (0.5**5, False, 5), (0.5**10, True, 4)]
    assert float(previous) == 0.5**13
    assert float(fun(w + previous * u)) < float(value)


# ----------------------------------------------------------------------------------------------
# Validation and sanitising.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("increase", [0.0, -2.0, 0.5, np.nan])
def test_traced_increase_factor_below_one_counts_as_one(increase):
    got = jax.jit(lambda p, k: initial_learning_rate(p, increase_factor=k))(0.3, increase)
    assert float(got) == pytest.approx(0.3)


@pytest.mark.parametrize("max_lr", [np.nan, -1.0, 0.0, 1e-320, np.inf, -np.inf])
@pytest.mark.parametrize("previous", [0.0, 0.3])
def test_traced_invalid_max_learning_rate_gives_zero_and_no_search(max_lr, previous):
    guess = jax.jit(lambda p, m: initial_learning_rate(p, max_learning_rate=m))(previous, max_lr)
    assert float(guess) == 0.0
    # 0 is an invalid η₀: the search does not start, and the step is zero (never NaN).
    fun = lambda w: jnp.sum(w**2)  # noqa: E731
    res = jax.jit(
        lambda eta0: backtracking_linesearch(
            fun, jnp.ones(2), -jnp.ones(2), value=2.0, slope=-2.0, initial_learning_rate=eta0
        )
    )(guess)
    assert float(res.learning_rate) == 0.0 and int(res.num_steps) == 0


@pytest.mark.parametrize("decrease", [0.0, 1.0, 1.5, -0.5, np.nan])
def test_traced_invalid_decrease_factor_restarts_from_max(decrease):
    run = jax.jit(lambda d: initial_learning_rate(0.0, smallest_tried=0.01, decrease_factor=d))
    assert float(run(decrease)) == 1.0


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"increase_factor": 0.0}, "increase_factor"),
        ({"increase_factor": 0.5}, "increase_factor"),
        ({"increase_factor": -1.0}, "increase_factor"),
        ({"increase_factor": math.nan}, "increase_factor"),
        ({"max_learning_rate": math.inf}, "max_learning_rate"),
        ({"max_learning_rate": 0.0}, "max_learning_rate"),
        ({"max_learning_rate": -1.0}, "max_learning_rate"),
        ({"max_learning_rate": math.nan}, "max_learning_rate"),
        ({"decrease_factor": 0.0}, "decrease_factor"),
        ({"decrease_factor": 1.0}, "decrease_factor"),
        ({"decrease_factor": math.nan}, "decrease_factor"),
    ],
)
def test_concrete_invalid_settings_raise(kw, name):
    with pytest.raises(ValueError, match=name):
        initial_learning_rate(0.5, **kw)


@pytest.mark.parametrize("name", ["previous", "smallest_tried"])
def test_non_scalar_inputs_raise(name):
    kw = {"previous": 0.0, "smallest_tried": 0.0} | {name: jnp.ones(2)}
    with pytest.raises(ValueError, match=name):
        initial_learning_rate(kw.pop("previous"), **kw)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(jnp.float64, jnp.float64), (jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32)],
)
def test_dtype_is_at_least_float32(dtype, expected):
    got = initial_learning_rate(jnp.asarray(0.25, dtype), increase_factor=2.0)
    assert got.dtype == expected
    assert float(got) == 0.5
    got = initial_learning_rate(
        jnp.asarray(0.0, dtype), smallest_tried=jnp.asarray(0.25, dtype), decrease_factor=0.5
    )
    assert got.dtype == expected
    assert float(got) == 0.125


def test_compiles_once_and_vmaps():
    traces = []

    @jax.jit
    def run(previous, increase, max_lr, smallest, decrease):
        traces.append(None)
        return initial_learning_rate(
            previous,
            increase_factor=increase,
            max_learning_rate=max_lr,
            smallest_tried=smallest,
            decrease_factor=decrease,
        )

    assert float(run(0.1, 4.0, 1.0, 0.0, 0.8)) == pytest.approx(0.4)
    assert float(run(0.0, math.inf, 3.0, 0.0, 0.8)) == 3.0
    assert float(run(0.5, math.inf, 3.0, 0.0, 0.8)) == 3.0
    assert float(run(0.0, math.inf, 3.0, 0.1, 0.5)) == pytest.approx(0.05)
    assert len(traces) == 1

    previous = jnp.asarray([0.0, 0.1, 0.3, np.nan, 0.0])
    smallest = jnp.asarray([0.0, 0.0, 0.0, 0.0, 0.02])
    got = jax.vmap(
        lambda p, s: initial_learning_rate(
            p, increase_factor=4.0, smallest_tried=s, decrease_factor=0.5
        )
    )(previous, smallest)
    np.testing.assert_allclose(np.asarray(got), [1.0, 0.4, 1.0, 1.0, 0.01])


def test_gradient_descent_recovers_after_a_failed_search():
    """A failed search (η = 0) with no trial to continue from restarts from η_max."""
    fun = lambda w: jnp.sum(jnp.where(jnp.abs(w) < 2.0, 0.25 * w**2, jnp.nan))  # noqa: E731
    w = jnp.asarray([1.0])
    previous = jnp.asarray(1.0)
    rates = []
    for step in range(3):  # a wild direction first, then gradient steps
        value, grad = jax.value_and_grad(fun)(w)
        u = jnp.asarray([-1e3]) if step == 0 else -grad
        eta0 = initial_learning_rate(previous, increase_factor=4.0)
        res = backtracking_linesearch(
            fun,
            w,
            u,
            value=value,
            slope=jnp.sum(grad * u),
            initial_learning_rate=eta0,
            max_steps=10,
        )
        w = w + res.learning_rate * u
        previous = res.learning_rate
        rates.append(float(res.learning_rate))
    assert rates == [0.0, 1.0, 1.0]  # (1 - η/2)² ≤ 1 accepts η = 1 at once after the restart
    assert bool(jnp.all(jnp.isfinite(w)))
