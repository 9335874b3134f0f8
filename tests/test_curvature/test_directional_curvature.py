"""directional_curvature: closed forms, dense Hessians, finite differences, errors, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import cdat_core as cc
from cdat_core import testing


def _random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), tree)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("structure", ["nested", "flat"])
def test_quadratic_closed_form(seed, structure):
    spd = testing.matrix_with_spectrum(testing.log_spaced_spectrum(7, 100.0, top=5.0), seed)
    q = testing.quadratic(spd, seed=seed, structure=structure)
    u = _random_like(q.params, seed + 100)
    x, u_flat = q.flatten(q.params), q.flatten(u)

    value, slope, curvature = cc.directional_curvature(q.fun, q.params, u)

    np.testing.assert_allclose(value, 0.5 * x @ spd.matrix @ x + q.vector @ x, rtol=1e-12)
    np.testing.assert_allclose(slope, (spd.matrix @ x + q.vector) @ u_flat, rtol=1e-12)
    np.testing.assert_allclose(curvature, u_flat @ spd.matrix @ u_flat, rtol=1e-12)


def test_nested_params_with_none_subtree():
    params = {"w": jnp.array([1.0, 2.0]), "extra": None, "b": (jnp.array(3.0),)}
    u = {"w": jnp.array([0.5, -1.0]), "extra": None, "b": (jnp.array(2.0),)}

    def f(p):
        return jnp.sum(p["w"] ** 3) + p["b"][0] ** 2

    value, slope, curvature = cc.directional_curvature(f, params, u)
    # f = w0³ + w1³ + b²: slope = 3w0²u0 + 3w1²u1 + 2b·ub, curvature = 6w0u0² + 6w1u1² + 2ub².
    assert float(value) == pytest.approx(1 + 8 + 9)
    assert float(slope) == pytest.approx(3 * 0.5 + 12 * -1.0 + 6 * 2.0)
    assert float(curvature) == pytest.approx(6 * 0.25 + 12 * 1.0 + 2 * 4.0)


@pytest.mark.parametrize("seed", range(3))
def test_against_dense_hessian_on_tanh_mlp(seed):
    m = testing.mlp((3, 5, 4, 2), seed=seed)
    u = _random_like(m.params, seed + 7)
    flat_w, unravel = ravel_pytree(m.params)
    flat_u, _ = ravel_pytree(u)

    def flat_loss(v):
        return m.loss(unravel(v), m.inputs, m.targets)

    hessian = jax.hessian(flat_loss)(flat_w)
    gradient = jax.grad(flat_loss)(flat_w)

    value, slope, curvature = cc.directional_curvature(m.loss, m.params, u, m.inputs, m.targets)

    np.testing.assert_allclose(value, flat_loss(flat_w), rtol=1e-12)
    np.testing.assert_allclose(slope, gradient @ flat_u, rtol=1e-10)
    np.testing.assert_allclose(curvature, flat_u @ hessian @ flat_u, rtol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_against_central_finite_differences(seed):
    m = testing.mlp((4, 6, 3), seed=seed)
    u = _random_like(m.params, seed + 11)

    def phi(t):
        w = jax.tree.map(lambda p, d: p + t * d, m.params, u)
        return float(m.loss(w, m.inputs, m.targets))

    # Richardson-extrapolated central differences: O(h⁴) truncation error in float64.
    def d1(h):
        return (phi(h) - phi(-h)) / (2 * h)

    def d2(h):
        return (phi(h) - 2 * phi(0.0) + phi(-h)) / h**2

    h = 1e-3
    slope_fd = (4 * d1(h / 2) - d1(h)) / 3
    curvature_fd = (4 * d2(h / 2) - d2(h)) / 3

    _, slope, curvature = cc.directional_curvature(m.loss, m.params, u, m.inputs, m.targets)
    assert abs(float(slope) - slope_fd) <= 1e-6 * abs(slope_fd)
    assert abs(float(curvature) - curvature_fd) <= 1e-6 * abs(curvature_fd)


def test_scaling_of_direction():
    m = testing.mlp((3, 4, 2), seed=1)
    u = _random_like(m.params, 2)
    base = cc.directional_curvature(m.loss, m.params, u, m.inputs, m.targets)
    for alpha in (-2.0, 0.5, 3.0):
        scaled = cc.directional_curvature(
            m.loss, m.params, jax.tree.map(lambda x, a=alpha: a * x, u), m.inputs, m.targets
        )
        np.testing.assert_allclose(scaled.value, base.value, rtol=1e-14)
        np.testing.assert_allclose(scaled.slope, alpha * base.slope, rtol=1e-12)
        np.testing.assert_allclose(scaled.curvature, alpha**2 * base.curvature, rtol=1e-12)


def test_traces_objective_once_and_uses_no_reverse_mode():
    calls = []

    def f(w):
        calls.append(1)

        # lax.while_loop supports forward mode only: a reverse pass would raise.
        def body(carry):
            i, acc = carry
            return i + 1, acc + jnp.sin(w * (i + 1.0)).sum()

        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, jnp.zeros((), w.dtype)))[1]

    w, u = jnp.array([0.3, -0.2]), jnp.array([1.0, 2.0])
    value, slope, curvature = cc.directional_curvature(f, w, u)
    assert len(calls) == 1
    k = jnp.arange(1.0, 4.0)[:, None]
    kw, uu = k * w[None, :], u[None, :]
    np.testing.assert_allclose(value, jnp.sum(jnp.sin(kw)), rtol=1e-12)
    np.testing.assert_allclose(slope, jnp.sum(k * jnp.cos(kw) * uu), rtol=1e-12)
    np.testing.assert_allclose(curvature, jnp.sum(-(k**2) * jnp.sin(kw) * uu**2), rtol=1e-12)
    with pytest.raises(ValueError, match=r"[Rr]everse-mode"):
        cc.hvp(f, w, u)  # the same objective through a reverse pass fails


def test_extra_args_are_not_differentiated():
    def f(w, scale):
        return scale * jnp.sum(w**2)

    out = cc.directional_curvature(f, jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]), 3.0)
    assert float(out.curvature) == pytest.approx(6.0)
