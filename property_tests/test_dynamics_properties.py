"""Invariants of the simplified models in cdat_core.dynamics (eqs 4, 5, 6, 9, 10)."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import cdat_core.dynamics as dynamics
from cdat_core import testing

STEPS = 40
# Floats come from testing.floats (normal numbers only): XLA flushes subnormal inputs to zero,
# the Python references below do not, and the scaling symmetries are exact only away from the
# subnormal range.

sharpening = testing.floats(0.0, 1.0)
feedback = testing.floats(0.0, 2.0)
sharpness = testing.floats(0.05, 20.0)
projection = testing.floats(-3.0, 3.0)
sigma = testing.floats(0.5, 3.0)
# p and g shrink along a run: starting at 0 or at least 1e-6 keeps them, and their scaled
# copies, out of the subnormal range, where scaling by a power of two is no longer exact.
mass = st.one_of(st.just(0.0), testing.floats(1e-6, 10.0))


def constant(a, b, eta, lam0, x0, num_steps=STEPS):
    return dynamics.simulate_constant_learning_rate(a, b, eta, lam0, x0, num_steps=num_steps)


def classical(a, b, eps, lam0, x0, num_steps=STEPS):
    return dynamics.simulate_classical_tuner(a, b, eps, lam0, x0, num_steps=num_steps)


def cdat(a, b, nu, s, lam0, eta0, p0, g0, num_steps=STEPS):
    return dynamics.simulate_cdat(a, b, nu, s, lam0, eta0, p0, g0, num_steps=num_steps)


def _check_well_formed(traj):
    """Finite everywhere, p, g ≥ 0, diverged monotone, state frozen once diverged."""
    flags = np.asarray(traj.diverged)
    assert not flags[0]
    if flags[-1]:
        first = int(np.argmax(flags))
        assert np.all(flags[first:])
    else:
        first = len(flags)
    assert not np.any(flags[:first])
    for field in traj[:5]:
        field = np.asarray(field)
        assert np.all(np.isfinite(field))
        if first < len(flags):
            np.testing.assert_array_equal(field[first:], field[first - 1])
    assert np.all(np.asarray(traj.p) >= 0) and np.all(np.asarray(traj.g) >= 0)
    return first


# ------------------------------------------------------------------------------------------
# Well-formed output (finite, non-negative projections, honest divergence flag)
# ------------------------------------------------------------------------------------------


@given(sharpening, feedback, testing.floats(0.01, 2.0), sharpness, projection)
def test_constant_learning_rate_well_formed(a, b, eta, lam0, x0):
    _check_well_formed(constant(a, b, eta, lam0, x0))


@given(sharpening, feedback, testing.floats(0.0, 0.5), sharpness, projection)
def test_classical_tuner_well_formed(a, b, eps, lam0, x0):
    _check_well_formed(classical(a, b, eps, lam0, x0))


@given(
    sharpening,
    feedback,
    testing.floats(0.0, 1.0),
    sigma,
    sharpness,
    testing.floats(1e-3, 1.0),
    testing.floats(0.0, 10.0),
    testing.floats(0.0, 10.0),
)
def test_cdat_well_formed(a, b, nu, s, lam0, eta0, p0, g0):
    _check_well_formed(cdat(a, b, nu, s, lam0, eta0, p0, g0))


def test_well_formed_deterministic_twin():
    # A diverging run of each kind (deterministic twins of the three properties above).
    assert _check_well_formed(constant(3e-2, 3e-1, 1.0, 3.0, 0.3)) < STEPS
    assert _check_well_formed(cdat(5e-2, 1e-1, 0.1, 2.5, 18.0, 0.05, 4.0, 4.0)) < STEPS
    assert _check_well_formed(classical(1.0, 0.5, 0.05, 1.9, 0.3)) == STEPS + 1


# ------------------------------------------------------------------------------------------
# Classical tuner (6): y ≡ −2ε, and λ non-decreasing whenever a − b·x₀² > 0
# ------------------------------------------------------------------------------------------


@given(testing.floats(1e-3, 1.0), feedback, testing.floats(0.0, 0.5), sharpness, projection)
def test_classical_sharpness_non_decreasing_under_positive_drift(a, b, eps, lam0, x0):
    traj = classical(a, b, eps, lam0, x0)
    lam, eta = np.asarray(traj.sharpness), np.asarray(traj.learning_rate)
    np.testing.assert_allclose(traj.y, -2 * eps, atol=1e-12)
    if a - b * x0 * x0 > 0:
        assert np.all(np.diff(lam) >= 0)
        assert np.all(np.diff(eta) <= 0)


def test_classical_monotone_twin_and_counterexample():
    lam = np.asarray(classical(1.0, 0.5, 0.05, 1.9, 0.3).sharpness)
    assert np.all(np.diff(lam) > 0)
    lam = np.asarray(classical(1.0, 0.5, 0.05, 1.9, 2.0).sharpness)  # a − b·x₀² < 0
    assert not np.all(np.diff(lam) >= 0)


# ------------------------------------------------------------------------------------------
# CDAT model: recursion (5) equals eq (4) iterated directly; (9) interpolates σ/λ and σ/ν
# ------------------------------------------------------------------------------------------


def _direct_eq4(a, b, nu, s, lam, eta, p0, g0, num_steps):
    x, z = math.sqrt(p0), math.sqrt(g0)
    out = []
    for _ in range(num_steps + 1):
        out.append((eta, lam, x * x, z * z))
        grad_sq = lam**2 * x * x + nu**2 * z * z
        curv = abs(lam**3 * x * x + nu**3 * z * z)
        next_eta = s * grad_sq / curv if grad_sq > 0 else eta
        x, z, lam, eta = (
            (1 - eta * lam) * x,
            (1 - eta * nu) * z,
            lam + eta * (a - b * x * x),
            next_eta,
        )
    return np.array(out).T


@given(
    testing.floats(0.0, 0.2),
    testing.floats(0.0, 0.5),
    testing.floats(0.01, 1.0),
    testing.floats(1.0, 2.2),
    testing.floats(2.0, 20.0),
    testing.floats(0.01, 0.2),
    testing.floats(0.01, 5.0),
    testing.floats(0.01, 5.0),
)
def test_cdat_recursion_5_equals_eq4(a, b, nu, s, lam0, eta0, p0, g0):
    # 15 steps: long enough to leave the start, short enough that round-off, amplified by
    # the unstable dynamics of the larger σ, stays far below the tolerance.
    # Compared up to the first near-annihilation |1 − η_tλ_t| or |1 − η_tν| < 1e-4: there
    # p or g is the square of a cancelling difference, the rounding of y_t in (5) becomes a
    # large relative error in p_{t+1}, and rule (9) amplifies it (both forms are then right
    # only to that rounding).
    traj = cdat(a, b, nu, s, lam0, eta0, p0, g0, num_steps=15)
    with np.errstate(over="ignore", invalid="ignore"):
        eta, lam, p, g = _direct_eq4(a, b, nu, s, lam0, eta0, p0, g0, 15)
        cancelling = (np.abs(1 - eta * lam) < 1e-4) | (np.abs(1 - eta * nu) < 1e-4)
    n = int(np.argmax(traj.diverged)) if bool(traj.diverged[-1]) else 16
    assert n > 1 or not np.all(np.isfinite(lam[:2]))
    if cancelling.any():
        n = min(n, int(np.argmax(cancelling)) + 1)
    scale = np.maximum(1.0, np.abs(lam[:n]))
    np.testing.assert_allclose(np.asarray(traj.sharpness)[:n] / scale, lam[:n] / scale, atol=1e-9)
    np.testing.assert_allclose(np.asarray(traj.learning_rate)[:n], eta[:n], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(traj.p)[:n], p[:n], rtol=1e-8, atol=1e-300)
    np.testing.assert_allclose(np.asarray(traj.g)[:n], g[:n], rtol=1e-8, atol=1e-300)
    np.testing.assert_allclose(np.asarray(traj.y)[:n], eta[:n] * lam[:n] - 2, rtol=1e-8, atol=1e-9)


@given(
    sharpening,
    feedback,
    testing.floats(0.01, 1.0),
    sigma,
    testing.floats(2.0, 20.0),
    testing.floats(1e-3, 0.2),
    mass,
    mass,
)
def test_cdat_learning_rate_between_sigma_over_lambda_and_sigma_over_nu(
    a, b, nu, s, lam0, eta0, p0, g0
):
    traj = cdat(a, b, nu, s, lam0, eta0, p0, g0)
    n = int(np.argmax(traj.diverged)) if bool(traj.diverged[-1]) else STEPS + 1
    lam, eta = np.asarray(traj.sharpness)[: n - 1], np.asarray(traj.learning_rate)[1:n]
    p, g = np.asarray(traj.p)[: n - 1], np.asarray(traj.g)[: n - 1]
    informative = (lam >= nu) & (lam**2 * p + nu**2 * g > 1e-200)  # no underflow in (9)
    assert np.all(eta[informative] >= (s / lam[informative]) * (1 - 1e-12))
    assert np.all(eta[informative] <= (s / nu) * (1 + 1e-12))


def test_cdat_interpolation_twin():
    traj = cdat(5e-2, 1e-1, 0.1, 2.0, 18.0, 0.05, 4.0, 4.0)
    eta, lam = np.asarray(traj.learning_rate), np.asarray(traj.sharpness)
    assert np.all(eta[1:] > 2.0 / lam[:-1]) and np.all(eta[1:] < 2.0 / 0.1)


@given(sharpening, feedback, testing.floats(0.01, 1.0), sigma, sharpness, testing.floats(1e-3, 1.0))
def test_cdat_degenerate_projections_are_well_defined(a, b, nu, s, lam0, eta0):
    for p0, g0 in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0)]:
        traj = cdat(a, b, nu, s, lam0, eta0, p0, g0)
        _check_well_formed(traj)
        if p0 == 0:
            assert np.all(np.asarray(traj.p) == 0)
        if g0 == 0:
            assert np.all(np.asarray(traj.g) == 0)
        if p0 == g0 == 0:
            assert np.all(np.asarray(traj.learning_rate) == eta0)


# ------------------------------------------------------------------------------------------
# Scaling symmetries (exact in exact arithmetic; with powers of two also in floating point,
# as long as no value overflows or goes subnormal, hence the small tolerance):
#   λ → cλ, η → η/c, a → c²a, b → c²b, ν → cν leaves y, p, g unchanged;
#   x → kx (p, g → k²p, k²g), b → b/k² leaves η, λ, y unchanged.
# ------------------------------------------------------------------------------------------

powers_of_two = st.sampled_from([0.25, 0.5, 2.0, 4.0])


def _assert_scaled(scaled, base, c, k2):
    """Compare up to the first step where either run diverged (overflow is not scale-free)."""
    flags = np.asarray(scaled.diverged) | np.asarray(base.diverged)
    n = int(np.argmax(flags)) if flags[-1] else len(flags)
    pairs = [
        (scaled.sharpness, c * base.sharpness),
        (scaled.learning_rate, base.learning_rate / c),
        (scaled.y, base.y),
        (scaled.p, k2 * base.p),
        (scaled.g, k2 * base.g),
    ]
    for actual, desired in pairs:
        np.testing.assert_allclose(
            np.asarray(actual)[:n], np.asarray(desired)[:n], rtol=1e-12, atol=1e-300
        )


@given(
    powers_of_two,
    powers_of_two,
    sharpening,
    feedback,
    testing.floats(0.01, 2.0),
    sharpness,
    projection,
)
def test_constant_learning_rate_scaling(c, k, a, b, eta, lam0, x0):
    base = constant(a, b, eta, lam0, x0)
    scaled = constant(c * c * a, c * c * b / (k * k), eta / c, c * lam0, k * x0)
    _assert_scaled(scaled, base, c, k * k)


@given(
    powers_of_two,
    powers_of_two,
    sharpening,
    feedback,
    testing.floats(0.0, 0.5),
    sharpness,
    projection,
)
def test_classical_tuner_scaling(c, k, a, b, eps, lam0, x0):
    base = classical(a, b, eps, lam0, x0)
    scaled = classical(c * c * a, c * c * b / (k * k), eps, c * lam0, k * x0)
    _assert_scaled(scaled, base, c, k * k)


@given(
    powers_of_two,
    powers_of_two,
    sharpening,
    feedback,
    st.one_of(st.just(0.0), testing.floats(1e-3, 1.0)),
    sigma,
    sharpness,
    testing.floats(1e-3, 1.0),
    mass,
    mass,
)
def test_cdat_scaling(c, k, a, b, nu, s, lam0, eta0, p0, g0):
    base = cdat(a, b, nu, s, lam0, eta0, p0, g0)
    scaled = cdat(c * c * a, c * c * b / k, c * nu, s, c * lam0, eta0 / c, k * p0, k * g0)
    _assert_scaled(scaled, base, c, k)


def test_scaling_twin():
    base = cdat(5e-2, 1e-1, 0.1, 2.0, 18.0, 0.05, 4.0, 4.0)
    scaled = cdat(0.2, 0.4 / 4, 0.2, 2.0, 36.0, 0.025, 16.0, 16.0)
    np.testing.assert_array_equal(scaled.sharpness, 2 * base.sharpness)
    np.testing.assert_array_equal(scaled.y, base.y)
    np.testing.assert_array_equal(scaled.p, 4 * base.p)
