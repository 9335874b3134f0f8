"""initial_learning_rate: min(c₊·η_{t−1}, η_max), with a restart from η_max after a failure."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdat_core.linesearch import backtracking_linesearch, initial_learning_rate


@pytest.mark.parametrize("previous", [1e-6, 0.01, 0.2, 0.25, 0.3, 1.0, 7.0])
@pytest.mark.parametrize("increase", [0.5, 1.0, 4.0, 1e300])
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
@pytest.mark.parametrize("previous", [0.0, -0.0, -1.0, np.nan, np.inf, -np.inf])
def test_failed_or_invalid_previous_restarts_from_max(previous, increase):
    # 0 is what a failed search returns; inf·0 would be NaN, optax's 4·0 stays 0 forever.
    previous = jnp.asarray(previous, jnp.float64)
    got = initial_learning_rate(previous, increase_factor=increase, max_learning_rate=0.7)
    assert float(got) == 0.7


@pytest.mark.parametrize("increase", [0.0, -2.0, np.nan])
def test_traced_invalid_increase_factor_restarts_from_max(increase):
    got = jax.jit(lambda p, k: initial_learning_rate(p, increase_factor=k))(0.3, increase)
    assert float(got) == 1.0


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"increase_factor": 0.0}, "increase_factor"),
        ({"increase_factor": -1.0}, "increase_factor"),
        ({"increase_factor": math.nan}, "increase_factor"),
        ({"max_learning_rate": math.inf}, "max_learning_rate"),
        ({"max_learning_rate": 0.0}, "max_learning_rate"),
        ({"max_learning_rate": math.nan}, "max_learning_rate"),
    ],
)
def test_concrete_invalid_settings_raise(kw, name):
    with pytest.raises(ValueError, match=name):
        initial_learning_rate(0.5, **kw)


def test_non_scalar_previous_raises():
    with pytest.raises(ValueError, match="scalar"):
        initial_learning_rate(jnp.ones(2))


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(jnp.float64, jnp.float64), (jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32)],
)
def test_dtype_is_at_least_float32(dtype, expected):
    got = initial_learning_rate(jnp.asarray(0.25, dtype), increase_factor=2.0)
    assert got.dtype == expected
    assert float(got) == 0.5


def test_compiles_once_and_vmaps():
    traces = []

    @jax.jit
    def run(previous, increase, max_lr):
        traces.append(None)
        return initial_learning_rate(previous, increase_factor=increase, max_learning_rate=max_lr)

    assert float(run(0.1, 4.0, 1.0)) == pytest.approx(0.4)
    assert float(run(0.0, math.inf, 3.0)) == 3.0
    assert float(run(0.5, math.inf, 3.0)) == 3.0
    assert len(traces) == 1

    previous = jnp.asarray([0.0, 0.1, 0.3, np.nan])
    got = jax.vmap(lambda p: initial_learning_rate(p, increase_factor=4.0))(previous)
    np.testing.assert_allclose(np.asarray(got), [1.0, 0.4, 1.0, 1.0])


def test_gradient_descent_recovers_after_a_failed_search():
    """A failed search (η = 0) is followed by a fresh search from η_max that succeeds."""
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
