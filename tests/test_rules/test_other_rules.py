"""sharpness_learning_rate (eq 16), polyak_learning_rate (eq 14), ema, hypergradient bad input."""

import jax
import jax.numpy as jnp
import pytest

import cdat_core as cc

INF, NAN = float("inf"), float("nan")


def _finite_grads(fun, *args):
    grads = jax.grad(fun, argnums=tuple(range(len(args))))(*args)
    return all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    ("sharpness", "kwargs", "expected"),
    [
        (8.0, {}, 0.25),
        (8.0, {"sigma": 3.0}, 0.375),
        (-8.0, {}, 0.25),
        (8.0, {"max_learning_rate": 0.1}, 0.1),
        (0.0, {}, 0.0),
        (0.0, {"max_learning_rate": 5.0}, 5.0),
        (NAN, {}, 0.0),
        (INF, {}, 0.0),
    ],
)
def test_sharpness_learning_rate(sharpness, kwargs, expected):
    def rate(lam):
        return cc.sharpness_learning_rate(lam, **kwargs)

    lam = jnp.float64(sharpness)
    assert float(rate(lam)) == pytest.approx(expected, rel=1e-14)
    assert _finite_grads(rate, lam)


@pytest.mark.parametrize(
    ("value", "grad_sq_norm", "kwargs", "expected"),
    [
        (2.0, 8.0, {}, 0.25),
        (2.0, 0.5, {}, 1.0),  # capped at max_learning_rate = 1
        (2.0, 0.5, {"max_learning_rate": 100.0}, 4.0),
        (2.0, 8.0, {"f_star": 1.0}, 0.125),
        (2.0, 8.0, {"eps": 2.0}, 0.2),
        (0.5, 8.0, {"f_star": 1.0}, 0.0),  # below f*: no ascent step
        (2.0, 0.0, {}, 1.0),  # zero gradient, positive gap: the cap
        (2.0, 0.0, {"max_learning_rate": INF}, 0.0),
        (NAN, 1.0, {}, 0.0),
        (1.0, INF, {}, 0.0),
    ],
)
def test_polyak_learning_rate(value, grad_sq_norm, kwargs, expected):
    def rate(v, g):
        return cc.polyak_learning_rate(v, g, **kwargs)

    v, g = jnp.float64(value), jnp.float64(grad_sq_norm)
    assert float(rate(v, g)) == pytest.approx(expected, rel=1e-14)
    assert _finite_grads(rate, v, g)


def test_ema_definition_and_pytrees():
    assert float(cc.ema(jnp.float64(1.0), jnp.float64(3.0), 0.9)) == pytest.approx(1.2)
    assert float(cc.ema(jnp.float64(1.0), jnp.float64(3.0), 0.0)) == 3.0
    tree = cc.ema(
        {"n": jnp.float32(2.0), "d": jnp.float32(4.0)},
        {"n": jnp.float32(0.0), "d": jnp.float32(8.0)},
        0.5,
    )
    assert float(tree["n"]) == 1.0 and float(tree["d"]) == 6.0
    assert tree["n"].dtype == jnp.float32


@pytest.mark.parametrize(
    ("next_grad", "learning_rate", "beta", "expected"),
    [
        (jnp.zeros(2), 0.1, 0.5, 0.1),  # zero gradient: cosine 0, unchanged
        (jnp.array([NAN, 1.0]), 0.1, 0.5, 0.05),  # overshoot to NaN: shrink by (1 - beta)
        (jnp.array([-1.0, 0.0]), NAN, 0.5, 0.0),
        (jnp.array([-1.0, 0.0]), 0.1, INF, 0.0),
    ],
)
def test_hypergradient_bad_input(next_grad, learning_rate, beta, expected):
    u = jnp.array([1.0, 0.0])

    def rate(lr, g):
        return cc.hypergradient_learning_rate(lr, g, u, beta=beta)

    lr = jnp.float64(learning_rate)
    assert float(rate(lr, next_grad)) == pytest.approx(expected, rel=1e-14)
    assert _finite_grads(rate, lr, next_grad)


def test_hypergradient_zero_direction_and_structure_error():
    out = cc.hypergradient_learning_rate(jnp.float64(0.1), jnp.ones(2), jnp.zeros(2), beta=0.5)
    assert float(out) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="next_grad"):
        cc.hypergradient_learning_rate(0.1, {"a": jnp.ones(2)}, {"b": jnp.ones(2)}, beta=0.5)
