"""The paper's identities for the curvature rules, as properties over random SPD quadratics.

Each property has a deterministic twin right below it on a fixed problem.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import cdat_core as cc
from cdat_core import testing


def _aligned_point(q, spd, scale):
    """Params where ∇f(w) = scale · v_max, the top eigenvector."""
    v1 = spd.eigenvectors[:, 0]
    x = np.linalg.solve(spd.matrix, scale * v1 - q.vector)
    return q.unflatten(x)


def _descent(q, params):
    return jax.tree.map(jnp.negative, jax.grad(q.fun)(params))


def check_aligned_gradient_identities(spd, seed, scale):
    q = testing.quadratic(spd, seed=seed)
    w = _aligned_point(q, spd, scale)
    _, slope, curvature = cc.directional_curvature(q.fun, w, _descent(q, w))
    lam = spd.eigenvalues[0]
    np.testing.assert_allclose(cc.on_edge_learning_rate(slope, curvature), 2.0 / lam, rtol=1e-9)
    np.testing.assert_allclose(cc.greedy_learning_rate(slope, curvature), 1.0 / lam, rtol=1e-9)


@given(
    testing.spd_matrices(3, 8, condition_number=(1.5, 1e3)),
    st.integers(0, 2**31),
    testing.floats(1e-2, 1e2),
)
def test_aligned_gradient_gives_two_over_lambda_max(spd, seed, scale):
    check_aligned_gradient_identities(spd, seed, scale)


def test_aligned_gradient_gives_two_over_lambda_max_twin():
    spd = testing.matrix_with_spectrum([10.0, 3.0, 1.0, 0.1], seed=4)
    check_aligned_gradient_identities(spd, 4, 1.0)


def check_on_edge_leaves_model_at_value(q, direction_seed):
    w = q.params
    rng = np.random.default_rng(direction_seed)
    u = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), w)
    value, slope, curvature = cc.directional_curvature(q.fun, w, u)
    u = jax.tree.map(lambda x: -jnp.sign(slope) * x, u)  # make u a descent direction
    slope = -jnp.abs(slope)
    eta = cc.on_edge_learning_rate(slope, curvature)
    # eq (7): q(η_oe) = f(w); on a quadratic the model is exact, so f(w + η_oe u) = f(w).
    model = value + eta * slope + 0.5 * eta**2 * curvature
    stepped = q.fun(jax.tree.map(lambda a, b: a + eta * b, w, u))
    scale = abs(float(value)) + abs(float(eta * slope))
    np.testing.assert_allclose(float(model), float(value), atol=1e-9 * scale)
    np.testing.assert_allclose(float(stepped), float(value), atol=1e-9 * scale)


@given(testing.quadratic_problems(), st.integers(0, 2**31))
def test_on_edge_step_leaves_quadratic_model_unchanged(q, direction_seed):
    check_on_edge_leaves_model_at_value(q, direction_seed)


def test_on_edge_step_leaves_quadratic_model_unchanged_twin():
    spd = testing.matrix_with_spectrum([5.0, 2.0, 1.0, 0.5, 0.2], seed=1)
    check_on_edge_leaves_model_at_value(testing.quadratic(spd, seed=2), 3)


def check_greedy_minimises_along_u(q):
    w = q.params
    u = _descent(q, w)
    _, slope, curvature = cc.directional_curvature(q.fun, w, u)
    eta = float(cc.greedy_learning_rate(slope, curvature))

    def phi(t):
        return float(q.fun(jax.tree.map(lambda a, b: a + t * b, w, u)))

    best = phi(eta)
    for t in eta * np.array([0.0, 0.5, 0.9, 0.99, 1.01, 1.1, 1.5, 2.0]):
        assert best <= phi(t) + 1e-12 * (1 + abs(best))
    # And φ'(η_qg) = 0: the slope at the greedy point vanishes.
    w_star = jax.tree.map(lambda a, b: a + eta * b, w, u)
    slope_star = cc.directional_curvature(q.fun, w_star, u).slope
    assert abs(float(slope_star)) <= 1e-8 * abs(float(slope))


@given(testing.quadratic_problems())
def test_greedy_step_minimises_along_u(q):
    check_greedy_minimises_along_u(q)


def test_greedy_step_minimises_along_u_twin():
    spd = testing.matrix_with_spectrum([3.0, 2.0, 1.0, 0.01], seed=5)
    check_greedy_minimises_along_u(testing.quadratic(spd, seed=6))


# Slopes and curvatures lie in [1e-3, 1e3] in magnitude, so |slope|/curvature ≥ 1e-6 and every
# σ ≥ SIGMA_MIN (1e6·tiny needed, 100 to spare for rounding) keeps σ·|slope| and the learning
# rate normal numbers. Below it the learning rate can be subnormal, which XLA's CPU backend
# flushes to 0: linearity is not promised there (σ = 2.2e-313 once failed this property), only
# a finite, non-negative value (the twin below).
SIGMA_MIN = float(np.finfo(np.float64).tiny) * 1e8
sigmas = st.one_of(st.just(0.0), testing.floats(SIGMA_MIN, 4.0))


def check_linear_and_monotone_in_sigma(slope, curvature, s1, s2):
    s, c = jnp.float64(slope), jnp.float64(curvature)
    e1 = float(cc.cdat_learning_rate(s, c, sigma=s1))
    e2 = float(cc.cdat_learning_rate(s, c, sigma=s2))
    base = float(cc.cdat_learning_rate(s, c, sigma=1.0))
    np.testing.assert_allclose(e1, s1 * base, rtol=1e-12, atol=0)
    np.testing.assert_allclose(e2, s2 * base, rtol=1e-12, atol=0)
    assert (e1 <= e2) == (s1 <= s2) or e1 == e2


@given(testing.floats(-1e3, -1e-3), testing.floats(1e-3, 1e3), sigmas, sigmas)
def test_learning_rate_is_linear_and_monotone_in_sigma(slope, curvature, s1, s2):
    check_linear_and_monotone_in_sigma(slope, curvature, s1, s2)


def test_learning_rate_is_linear_and_monotone_in_sigma_twin():
    for s1, s2 in [(0.0, SIGMA_MIN), (SIGMA_MIN, 1e-3), (0.5, 2.0), (4.0, 1.0)]:
        check_linear_and_monotone_in_sigma(-1e-3, 1e3, s1, s2)
    # Below the normal range the result may be flushed to 0, but is never negative or NaN.
    eta = float(cc.cdat_learning_rate(jnp.float64(-1.0), jnp.float64(2.0), sigma=2.2e-313))
    assert 0.0 <= eta <= 2.2e-313


# The bounds hold for every input: every float is drawn (subnormals, infinities, NaN, values
# near finfo.max where σ·|slope| or f(w) - f* overflow), in float64 and in float32 (the tuners'
# usual dtype), eagerly and under jit (where XLA rewrites the guarded division).


def _cdat(s, c, sigma, max_lr):
    return cc.cdat_learning_rate(s, c, sigma=sigma, max_learning_rate=max_lr)


def _polyak(value, grad_sq_norm, f_star, max_lr):
    return cc.polyak_learning_rate(value, grad_sq_norm, f_star=f_star, max_learning_rate=max_lr)


_GRAD = jax.grad(_cdat, argnums=(0, 1))
_RULES = [(_cdat, _GRAD, _polyak), (jax.jit(_cdat), jax.jit(_GRAD), jax.jit(_polyak))]


def any_float(width):
    finfo = np.finfo({32: np.float32, 64: np.float64}[width])
    edges = [float(x) for x in (finfo.max, -finfo.max, finfo.tiny, -finfo.tiny)]
    return st.one_of(st.floats(width=width), st.just(0.0), st.sampled_from(edges))


def check_never_nan_and_within_bounds(slope, curvature, sigma, max_learning_rate, dtype):
    s, c, sigma, cap = (jnp.asarray(x, dtype) for x in (slope, curvature, sigma, max_learning_rate))
    for cdat, grad, polyak in _RULES:
        eta = cdat(s, c, sigma, cap)
        assert eta.dtype == dtype and bool(jnp.isfinite(eta)), eta
        assert 0.0 <= float(eta) <= float(cap)
        grads = grad(s, c, sigma, cap)
        assert not any(bool(jnp.isnan(g)) for g in grads), grads
        # Finite too, unless the exact derivatives σ/|c| and η/|c| exceed finfo.max: that needs
        # 0 < η ≤ cap and |c| < sqrt(tiny), since η ≤ finfo.max**0.25 and σ ≤ 10.
        steep = (
            0.0 < float(eta) <= float(cap) and abs(float(c)) < float(jnp.finfo(dtype).tiny) ** 0.5
        )
        assert steep or all(bool(jnp.isfinite(g)) for g in grads), grads
        # Polyak on the same numbers: value = slope, ‖∇f‖² = |curvature|, f* = -curvature.
        eta = polyak(s, jnp.abs(c), -c, cap)
        assert bool(jnp.isfinite(eta)) and 0.0 <= float(eta) <= float(cap), eta


@given(
    any_float(64),
    any_float(64),
    st.floats(0.0, 10.0),
    st.one_of(st.just(float("inf")), st.floats(0.0, 1e3)),
)
def test_never_nan_and_within_bounds(slope, curvature, sigma, max_learning_rate):
    check_never_nan_and_within_bounds(slope, curvature, sigma, max_learning_rate, jnp.float64)


@given(
    any_float(32),
    any_float(32),
    st.floats(0.0, 10.0, width=32),
    st.one_of(st.just(float("inf")), st.floats(0.0, 1e3, width=32)),
)
def test_never_nan_and_within_bounds_float32(slope, curvature, sigma, max_learning_rate):
    check_never_nan_and_within_bounds(slope, curvature, sigma, max_learning_rate, jnp.float32)


def test_never_nan_and_within_bounds_twin():
    # Falsifying examples found by the properties. σ·|slope| overflowed to inf (NaN before):
    check_never_nan_and_within_bounds(-8.98846567431158e307, 1.5525e231, 2.0, np.inf, jnp.float64)
    check_never_nan_and_within_bounds(-1.7e308, -1.7e308, 2.0, 3.0, jnp.float64)
    # Under jit XLA turned (n/s)/(d/s) into (n·s)/(s·d), which overflowed or underflowed to
    # NaN for moderate float32 numbers (NaN before); the learning rate is 2 here.
    for slope, curvature, dtype in [(-1e-20, 1e-20, jnp.float32), (-1e20, 1e20, jnp.float32)]:
        check_never_nan_and_within_bounds(slope, curvature, 2.0, np.inf, dtype)
        eta = jax.jit(_cdat)(*(jnp.asarray(x, dtype) for x in (slope, curvature, 2.0, np.inf)))
        np.testing.assert_allclose(eta, 2.0, rtol=1e-6)
