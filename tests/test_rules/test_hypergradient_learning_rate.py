"""hypergradient_learning_rate (eq 15): closed form, direction of the change, jit and vmap.

Bad input (zero/NaN gradients, NaN learning rate, structure errors) is in test_other_rules.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import testing


def numpy_rule(learning_rate, next_grad, direction, beta):
    g = np.concatenate([np.ravel(x) for x in jax.tree.leaves(next_grad)])
    u = np.concatenate([np.ravel(x) for x in jax.tree.leaves(direction)])
    cosine = g @ u / (np.linalg.norm(g) * np.linalg.norm(u))
    return max(learning_rate * (1.0 - beta * cosine), 0.0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0])
def test_matches_numpy_on_pytrees(seed, beta):
    rng = np.random.default_rng(seed)

    def tree():
        return {
            "a": jnp.asarray(rng.standard_normal(3)),
            "b": [jnp.asarray(rng.standard_normal((2, 2))), None],
        }

    g, u = tree(), tree()
    lr = float(10.0 ** rng.uniform(-3, 0))
    got = cc.hypergradient_learning_rate(jnp.float64(lr), g, u, beta=beta)
    np.testing.assert_allclose(float(got), numpy_rule(lr, g, u, beta), rtol=1e-12)


def test_exact_cosines():
    u = jnp.asarray([2.0, 0.0])
    lr = jnp.float64(0.4)
    rule = lambda g: float(cc.hypergradient_learning_rate(lr, g, u, beta=0.5))  # noqa: E731
    assert rule(jnp.asarray([-3.0, 0.0])) == pytest.approx(0.6)  # cos = -1: η(1 + β)
    assert rule(jnp.asarray([3.0, 0.0])) == pytest.approx(0.2)  # cos = +1: η(1 - β)
    assert rule(jnp.asarray([0.0, 5.0])) == pytest.approx(0.4)  # orthogonal: unchanged
    assert rule(jnp.asarray([-1.0, 1.0])) == pytest.approx(0.4 * (1 + 0.5 / np.sqrt(2)))
    # β > 1 with a gradient along u would give a negative η: clipped at 0.
    assert float(cc.hypergradient_learning_rate(lr, u, u, beta=2.0)) == 0.0


def _quadratic_line():
    spd = testing.matrix_with_spectrum(testing.log_spaced_spectrum(6, 50.0, top=4.0), seed=1)
    q = testing.quadratic(spd, seed=2)
    grad = jax.grad(q.fun)(q.params)
    u = jax.tree.map(jnp.negative, grad)
    g, d = q.flatten(grad), q.flatten(u)
    greedy = -(g @ d) / (d @ spd.matrix @ d)  # argmin of f(w + ηu), eq (3)
    return q, u, greedy


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_raises_while_the_next_gradient_still_descends(ratio):
    """Deterministic twin of the property: η below the line minimum grows."""
    q, u, greedy = _quadratic_line()
    eta = ratio * greedy
    next_grad = jax.grad(q.fun)(jax.tree.map(lambda w, v: w + eta * v, q.params, u))
    new = cc.hypergradient_learning_rate(jnp.float64(eta), next_grad, u, beta=0.1)
    assert float(new) > eta


@pytest.mark.parametrize("ratio", [1.1, 1.5, 2.5])
def test_lowers_once_the_next_gradient_turned_against_u(ratio):
    q, u, greedy = _quadratic_line()
    eta = ratio * greedy
    next_grad = jax.grad(q.fun)(jax.tree.map(lambda w, v: w + eta * v, q.params, u))
    new = cc.hypergradient_learning_rate(jnp.float64(eta), next_grad, u, beta=0.1)
    assert float(new) < eta


def test_unchanged_at_the_line_minimum():
    q, u, greedy = _quadratic_line()
    next_grad = jax.grad(q.fun)(jax.tree.map(lambda w, v: w + greedy * v, q.params, u))
    new = cc.hypergradient_learning_rate(jnp.float64(greedy), next_grad, u, beta=0.5)
    np.testing.assert_allclose(float(new), greedy, rtol=1e-9)


def test_dtypes():
    u = jnp.ones(3, jnp.bfloat16)
    out = cc.hypergradient_learning_rate(jnp.float32(0.1), -u, u, beta=0.5)
    assert out.dtype == jnp.float32
    assert float(out) == pytest.approx(0.15, rel=1e-6)


def test_compiles_once_and_vmaps():
    traces = []

    @jax.jit
    def run(lr, g, u, beta):
        traces.append(None)
        return cc.hypergradient_learning_rate(lr, g, u, beta=beta)

    u = jnp.asarray([1.0, 0.0])
    a = run(jnp.float64(0.1), -u, u, 0.5)
    b = run(jnp.float64(0.2), u, u, 0.25)
    assert len(traces) == 1
    assert float(a) == pytest.approx(0.15) and float(b) == pytest.approx(0.15)

    gs = jnp.asarray([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = jax.vmap(lambda g: cc.hypergradient_learning_rate(jnp.float64(0.1), g, u, beta=0.5))(gs)
    np.testing.assert_allclose(np.asarray(out), [0.15, 0.05, 0.1])
