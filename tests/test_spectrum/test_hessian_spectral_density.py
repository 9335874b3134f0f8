"""hessian_spectral_density: stochastic Lanczos quadrature against chosen spectra (float64).

Gauss quadrature is exact for polynomials of degree <= 2m - 1, and for a diagonal Hessian a
Rademacher probe sees v̂ᵀHᵏv̂ = tr(Hᵏ)/n exactly, so on diagonal quadratics the averaged
moments must equal tr(Hᵏ)/n to rounding; on rotated ones each probe's moments must equal
v̂ᵀHᵏv̂ for that probe (recomputed here from the dense matrix).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import spectrum, testing

H_DIAG = np.array([0.1, 0.1, 0.4, 0.7, 1.0, 1.0, 1.0, 1.5, 2.0, 2.2, 2.9, 3.0])


def _diag_fun(w, h):
    return 0.5 * (jnp.sum(h["a"] * w["a"] ** 2) + jnp.sum(h["b"]["c"] * w["b"]["c"] ** 2))


def _split(x):
    return {"a": jnp.asarray(x[:5]), "b": {"c": jnp.asarray(x[5:]).reshape(7, 1), "d": None}}


TRACES = []


@jax.jit
def _run(h, key, pre, width):
    """One compiled program for every diagonal case: 3 probes, 6 steps, traced P and σ.

    ``width=nan`` (traced, not positive) selects the default kernel width.
    """
    TRACES.append(1)
    return cc.hessian_spectral_density(
        _diag_fun,
        _split(np.zeros(12)),
        h,
        key=key,
        num_probes=3,
        num_steps=6,
        preconditioner=pre,
        kernel_width=width,
    )


def _density_diag(h, seed, pre=None, width=np.nan):
    pre = np.ones(12) if pre is None else pre
    return _run(_split(h), jax.random.key(seed), _split(pre), jnp.asarray(width))


def _moments(out, k):
    return np.asarray(jnp.sum(out.weights * out.nodes**k, axis=1))


def test_diagonal_quadratic_moments_are_exact_up_to_degree_2m_minus_1():
    out = _density_diag(H_DIAG, 0)
    assert int(out.num_matvecs) == 18 and out.nodes.shape == (3, 6)
    np.testing.assert_allclose(np.sum(out.weights, axis=1), 1.0, rtol=1e-13)
    for k in range(12):  # m = 6 steps: exact through degree 11
        np.testing.assert_allclose(_moments(out, k), np.mean(H_DIAG**k), rtol=1e-10)
    # ...and not beyond (so the check above could fail): degree 2m misses the point masses.
    assert np.max(np.abs(_moments(out, 14) / np.mean(H_DIAG**14) - 1)) > 1e-6


def test_smoothed_density_integrates_to_one_with_the_quadrature_mean_and_variance():
    out = _density_diag(H_DIAG, 1)
    t, phi, dt = np.asarray(out.grid), np.asarray(out.density), float(out.grid[1] - out.grid[0])
    assert np.all(phi >= 0) and np.all(np.diff(t) > 0)
    sigma = float(out.kernel_width)
    spread = float(jnp.max(out.nodes) - jnp.min(out.nodes))  # Ritz values: inside [0.1, 3]
    assert 2.0 < spread < 2.9
    np.testing.assert_allclose(sigma, 0.01 * spread, rtol=1e-10)  # the documented default
    np.testing.assert_allclose(np.sum(phi) * dt, 1.0, rtol=1e-6)  # ±5σ tails cut
    mean = np.sum(t * phi) * dt
    var = np.sum((t - mean) ** 2 * phi) * dt
    np.testing.assert_allclose(mean, np.mean(H_DIAG), rtol=1e-6)
    np.testing.assert_allclose(var, np.var(H_DIAG) + sigma**2, rtol=1e-5)


def test_given_kernel_width_and_point_masses():
    # Two distinct eigenvalues: the Krylov space breaks down after 2 steps, the nodes are
    # exactly 1 and 4 with weights 1/2, and the density at 1 is 0.5 * N(0; 0, σ²).
    h = np.array([1.0] * 6 + [4.0] * 6)
    out = _density_diag(h, 2, width=0.1)
    assert out.num_nodes.tolist() == [2, 2, 2]
    for probe in range(3):
        w = np.asarray(out.weights[probe])
        top = np.argsort(w)[-2:]
        np.testing.assert_allclose(np.sort(np.asarray(out.nodes[probe])[top]), [1.0, 4.0])
        np.testing.assert_allclose(w[top], 0.5, rtol=1e-12)
        assert np.all(np.delete(w, top) == 0.0)  # past the breakdown: no weight
    peak = np.interp(1.0, np.asarray(out.grid), np.asarray(out.density))
    np.testing.assert_allclose(float(out.kernel_width), 0.1)
    np.testing.assert_allclose(peak, 0.5 / (0.1 * np.sqrt(2 * np.pi)), rtol=2e-3)


def test_identity_hessian_is_one_node():
    out = _density_diag(np.full(12, 2.5), 3)
    assert out.num_nodes.tolist() == [1, 1, 1]
    np.testing.assert_allclose(_moments(out, 1), 2.5, rtol=1e-14)
    np.testing.assert_allclose(float(out.kernel_width), 0.025)  # 1% of |θ| when spread is 0
    assert np.all(np.isfinite(out.density)) and float(jnp.max(out.density)) > 10


def test_preconditioned_is_the_density_of_h_over_p():
    p = np.linspace(0.5, 2.0, 12)
    out = _density_diag(H_DIAG, 4, pre=p)
    for k in range(12):
        np.testing.assert_allclose(_moments(out, k), np.mean((H_DIAG / p) ** k), rtol=1e-10)


def test_rotated_quadratic_is_gauss_quadrature_of_each_probe():
    spd = testing.matrix_with_spectrum(testing.log_spaced_spectrum(24, 100.0, top=5.0), seed=3)
    a = jnp.asarray(spd.matrix)
    f = lambda w, a: 0.5 * w @ (a @ w)  # noqa: E731
    key, m = jax.random.key(5), 5
    run = jax.jit(lambda w, a, key: cc.hessian_spectral_density(f, w, a, key=key, num_steps=m))
    out = run(jnp.zeros(24), a, key)
    probes = [spectrum._rademacher_like(k, jnp.zeros(24)) for k in jax.random.split(key, 8)]
    for i, v in enumerate(probes):
        v = np.asarray(v) / np.sqrt(24)
        for k in range(2 * m):
            exact = v @ np.linalg.matrix_power(spd.matrix, k) @ v
            np.testing.assert_allclose(_moments(out, k)[i], exact, rtol=1e-9)
    # The average estimates tr(H²)/n within its standard error (stochastic, fixed key).
    second = _moments(out, 2)
    err = np.std(second, ddof=1) / np.sqrt(8)
    assert abs(np.mean(second) - np.mean(spd.eigenvalues**2)) <= 4 * err


def test_non_finite_hessian_gives_zero_density_not_nan():
    out = _density_diag(np.full(12, np.nan), 0)  # every product is NaN
    assert out.num_nodes.tolist() == [0, 0, 0] and int(out.num_matvecs) == 3
    assert np.all(np.asarray(out.density) == 0.0) and np.all(np.asarray(out.weights) == 0.0)
    assert np.all(np.isfinite(out.grid)) and np.isfinite(float(out.kernel_width))


def test_compiles_once():
    first = _density_diag(H_DIAG, 0)
    count = len(TRACES)
    # New Hessian, key, preconditioner and kernel width: the same program.
    second = _density_diag(H_DIAG * 2, 7, pre=np.full(12, 3.0), width=0.2)
    assert count >= 1 and len(TRACES) == count
    np.testing.assert_allclose(float(second.kernel_width), 0.2)
    assert not np.allclose(first.nodes, second.nodes)


def test_bad_arguments_are_named():
    f, w, key = (lambda w: jnp.sum(w**2)), jnp.zeros(3), jax.random.key(0)
    with pytest.raises(TypeError, match="key="):
        cc.hessian_spectral_density(f, w, key=None)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        cc.hessian_spectral_density(f, w, key=0)
    with pytest.raises(ValueError, match="num_steps"):
        cc.hessian_spectral_density(f, w, key=key, num_steps=0)
    with pytest.raises(TypeError, match="num_probes"):
        cc.hessian_spectral_density(f, w, key=key, num_probes=2.5)
    with pytest.raises(ValueError, match="kernel_width"):
        cc.hessian_spectral_density(f, w, key=key, kernel_width=-1.0)
    with pytest.raises(ValueError, match="kernel_width"):
        cc.hessian_spectral_density(f, w, key=key, kernel_width=float("nan"))
    with pytest.raises(ValueError, match="grid"):
        cc.hessian_spectral_density(f, w, key=key, grid=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="num_points"):
        cc.hessian_spectral_density(f, w, key=key, num_points=1)
    with pytest.raises(ValueError, match="preconditioner"):
        cc.hessian_spectral_density(f, w, key=key, preconditioner=jnp.ones(4))
    with pytest.raises(TypeError, match="floating"):
        cc.hessian_spectral_density(f, jnp.zeros(3, jnp.int32), key=key)
    with pytest.raises(TypeError, match="scalar"):
        cc.hessian_spectral_density(lambda w: w**2, w, key=key)
