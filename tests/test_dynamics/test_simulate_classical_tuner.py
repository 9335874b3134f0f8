"""simulate_classical_tuner: eq (4) with η_t = 2(1−ε)/λ_t, eq (6) (Fig. 4, orange)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core.dynamics as dynamics

# Fig. 4 "fixed y = −0.1" parameters (Appendix C): a = 1, b = 0.5, η₀ = 1, η = 1.9/λ,
# i.e. ε = 0.05 and λ₀ = 1.9; x₀ = 0.3 is our choice (the paper does not give it).
A, B, EPS, LAM0, X0 = 1.0, 0.5, 0.05, 1.9, 0.3


def _reference(a, b, eps, lam, x, num_steps):
    """Eqs (4) and (6) iterated in plain Python floats: (η, λ, x) per step."""
    out = []
    for _ in range(num_steps + 1):
        eta = 2.0 * (1.0 - eps) / lam
        out.append((eta, lam, x))
        x, lam = (1.0 - eta * lam) * x, eta * (a - b * x * x) + lam
    return np.array(out).T


def _simulate(a=A, b=B, eps=EPS, lam0=LAM0, x0=X0, num_steps=100):
    return dynamics.simulate_classical_tuner(a, b, eps, lam0, x0, num_steps=num_steps)


@pytest.mark.parametrize(
    ("a", "b", "eps", "lam0", "x0"), [(A, B, EPS, LAM0, X0), (3e-2, 3e-1, 0.1, 1.0, -0.5)]
)
def test_matches_plain_iteration(a, b, eps, lam0, x0):
    traj = _simulate(a, b, eps, lam0, x0, num_steps=80)
    etas, lams, xs = _reference(a, b, eps, lam0, x0, 80)
    np.testing.assert_allclose(traj.learning_rate, etas, rtol=1e-12)
    np.testing.assert_allclose(traj.sharpness, lams, rtol=1e-12)
    np.testing.assert_allclose(traj.p, xs**2, rtol=1e-12)
    np.testing.assert_array_equal(traj.g, np.zeros(81))
    assert not bool(traj.diverged[-1])


def test_figure4_runaway_sharpening_and_decaying_learning_rate():
    traj = _simulate()
    lam, eta = np.asarray(traj.sharpness), np.asarray(traj.learning_rate)
    assert np.all(np.diff(lam) > 0)
    assert np.all(np.diff(eta) < 0)
    assert lam[-1] > 5 * LAM0 and eta[-1] < 0.2 * eta[0]
    # y sits at −2ε (just below the edge) the whole time.
    np.testing.assert_allclose(traj.y, -2 * EPS, atol=1e-12)


def test_sharpness_follows_the_square_root_law():
    # Once p ≈ 0, λ_{t+1}² = λ_t² + 4(1−ε)a + η_t²a², so λ_T² ≈ λ₀² + 4(1−ε)aT.
    traj = _simulate(num_steps=400)
    predicted = math.sqrt(LAM0**2 + 4 * (1 - EPS) * A * 400)
    assert float(traj.sharpness[-1]) == pytest.approx(predicted, rel=0.02)


def test_projection_decays_geometrically():
    traj = _simulate(num_steps=50)
    p = np.asarray(traj.p)
    np.testing.assert_allclose(p[1:] / p[:-1], (1 - 2 * EPS) ** 2, rtol=1e-10)


def test_overshoots_the_edge_a_constant_learning_rate_holds():
    # With the Fig. 4 constant-η parameters, η = 1 keeps λ near 2/η = 2 for 100 steps
    # (test_simulate_constant_learning_rate); the tuner starting from η₀ = 1 does not.
    traj = _simulate(a=3e-2, b=3e-1, num_steps=100)
    assert float(traj.sharpness[-1]) > 3.5
    assert float(traj.learning_rate[-1]) < 0.55


def test_strong_feedback_first_lowers_the_sharpness():
    # The monotonicity needs a > b·x₀²; with b·x₀² > a the sharpness first decreases.
    traj = _simulate(x0=2.0, num_steps=5)
    assert float(traj.sharpness[1]) < LAM0


def test_zero_sharpness_is_flagged_not_nan():
    traj = _simulate(lam0=0.0, num_steps=5)
    assert np.all(np.asarray(traj.diverged))
    for field in traj[:5]:
        assert not np.any(np.isnan(np.asarray(field)))
    assert float(traj.learning_rate[0]) == math.inf


def test_new_numbers_do_not_retrace():
    traces = 0

    def run(*args):
        nonlocal traces
        traces += 1
        return dynamics.simulate_classical_tuner(*args, num_steps=17)

    jitted = jax.jit(run)
    jitted(A, B, EPS, LAM0, X0)
    second = jitted(0.5, 0.1, 0.2, 3.0, 0.1)
    assert traces == 1
    np.testing.assert_allclose(second.y, -0.4, atol=1e-12)


def test_float32_inputs_give_float32():
    f32 = np.float32
    traj = dynamics.simulate_classical_tuner(
        f32(A), f32(B), f32(EPS), f32(LAM0), f32(X0), num_steps=30
    )
    for field in traj[:5]:
        assert field.dtype == jnp.float32
    np.testing.assert_allclose(traj.sharpness, _simulate(num_steps=30).sharpness, rtol=1e-5)
