"""simulate_cdat: the two-eigenvalue CDAT model, eqs (9)-(10) with (5) (Figs. 9 and 11)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
import cdat_core.dynamics as dynamics

# Fig. 9 / Fig. 11 parameters (Appendix C of Roulet et al., 2024).
FIG9 = dict(a=5e-2, b=1e-1, nu=0.1, sharpness0=18.0, learning_rate0=0.05, p0=4.0, g0=4.0)


def _simulate(sigma, num_steps=600, **overrides):
    return dynamics.simulate_cdat(sigma=sigma, num_steps=num_steps, **{**FIG9, **overrides})


def _direct_eq4(a, b, nu, sigma, sharpness0, learning_rate0, p0, g0, num_steps):
    """Eq (4) in (x, λ) plus the orthogonal coordinate z, with η from the CDAT rule (9).

    No y, no ratio η_{t+1}/η_t: the state is the projections themselves, as in gradient
    descent on f(w) = ½(λ_t x² + ν z²) with the learning rate σ‖Hw‖²/(wᵀH³w).
    """
    lam, eta = sharpness0, learning_rate0
    x, z = np.sqrt(p0), np.sqrt(g0)
    out = []
    for _ in range(num_steps + 1):
        out.append((eta, lam, eta * lam - 2.0, x * x, z * z))
        grad_sq = lam**2 * x * x + nu**2 * z * z
        curv = lam**3 * x * x + nu**3 * z * z
        next_eta = sigma * grad_sq / abs(curv)
        x, z, lam, eta = (
            (1 - eta * lam) * x,
            (1 - eta * nu) * z,
            lam + eta * (a - b * x * x),
            next_eta,
        )
    return np.array(out).T


@pytest.mark.parametrize(("sigma", "num_steps"), [(2.0, 600), (1.9, 600), (2.5, 30)])
def test_recursion_5_agrees_with_iterating_eq4(sigma, num_steps):
    traj = _simulate(sigma, num_steps)
    eta, lam, y, p, g = _direct_eq4(sigma=sigma, num_steps=num_steps, **FIG9)
    assert not bool(traj.diverged[-1])
    np.testing.assert_allclose(traj.learning_rate, eta, rtol=1e-12)
    np.testing.assert_allclose(traj.sharpness, lam, rtol=1e-12)
    np.testing.assert_allclose(traj.p, p, rtol=1e-12)
    np.testing.assert_allclose(traj.g, g, rtol=1e-12)
    # y is a small difference (|y| ~ 1e-4 on edge): absolute tolerance at float64 resolution.
    np.testing.assert_allclose(traj.y, y, rtol=1e-12, atol=1e-13)


def test_rule_is_the_cdat_learning_rate_of_a_two_eigenvalue_quadratic():
    # η_{t+1} from (9) is eq (8) with u = −Hw̄, H = diag(λ_t, ν): slope −‖Hw̄‖², curvature
    # w̄ᵀH³w̄; computed here by the library's rule from the trajectory's own state.
    traj = _simulate(2.0, num_steps=50)
    lam, p, g = (np.asarray(f) for f in (traj.sharpness, traj.p, traj.g))
    nu = FIG9["nu"]
    slope = jnp.asarray(-(lam[:-1] ** 2 * p[:-1] + nu**2 * g[:-1]))
    curvature = jnp.asarray(lam[:-1] ** 3 * p[:-1] + nu**3 * g[:-1])
    rule = jax.jit(cc.cdat_learning_rate)(slope, curvature, sigma=jnp.float64(2.0))
    np.testing.assert_allclose(traj.learning_rate[1:], rule, rtol=1e-12)


def test_first_step_by_hand():
    traj = _simulate(2.0, num_steps=1)
    lam, p, g, nu = 18.0, 4.0, 4.0, 0.1
    eta1 = 2.0 * (lam**2 * p + nu**2 * g) / (lam**3 * p + nu**3 * g)
    lam1 = lam + 0.05 * (5e-2 - 1e-1 * p)
    np.testing.assert_allclose(traj.learning_rate, [0.05, eta1], rtol=1e-14)
    np.testing.assert_allclose(traj.sharpness, [lam, lam1], rtol=1e-13)
    np.testing.assert_allclose(traj.p, [p, (1 + 0.05 * lam - 2) ** 2 * p], rtol=1e-13)
    np.testing.assert_allclose(traj.g, [g, (1 - 0.05 * nu) ** 2 * g], rtol=1e-14)


def test_figure9_on_edge_holds_y_at_zero_and_p_stops_decaying():
    traj = _simulate(2.0)
    y, p = np.asarray(traj.y), np.asarray(traj.p)
    assert not bool(traj.diverged[-1])
    assert np.abs(y[300:]).max() < 1e-2
    assert abs(y[-1]) < 1e-3
    # p fell from p₀ = 4 in the first steps, and then stopped decaying (it slowly grows).
    assert p[300] < 0.1 * p[0]
    assert p[300:].min() >= p[300] and p[-1] > p[300]


def test_figure9_below_edge_y_settles_negative_and_p_decays():
    traj = _simulate(1.9)
    y, p, g = np.asarray(traj.y), np.asarray(traj.p), np.asarray(traj.g)
    assert not bool(traj.diverged[-1])
    tail = y[300:]
    assert np.all(tail < -1e-3) and np.all(tail > -5e-2)  # small, negative
    assert tail.max() - tail.min() < 0.2 * abs(tail.mean())  # settled
    assert p[-1] < 1e-2 * p[300]  # p keeps decaying
    # Fig. 11: the ratio p/g stays about constant (within 2x over the last half).
    ratio = p[300:] / g[300:]
    assert ratio.max() < 2 * ratio.min()


def test_sigma_below_two_sharpens_more():
    below, on_edge = _simulate(1.9), _simulate(2.0)
    assert float(below.sharpness[-1]) > float(on_edge.sharpness[-1])
    # On edge, p/g grows by orders of magnitude (p holds, g decays); below, it does not.
    grow = lambda t: float(t.p[-1] / t.g[-1]) / float(t.p[300] / t.g[300])  # noqa: E731
    assert grow(on_edge) > 100 and grow(below) < 2


def test_sigma_above_two_diverges_and_is_flagged():
    traj = _simulate(2.5, num_steps=100)
    assert bool(traj.diverged[-1])
    first = int(np.argmax(traj.diverged))
    assert 10 < first < 100
    for field in traj[:5]:
        field = np.asarray(field)
        assert np.all(np.isfinite(field))
        np.testing.assert_array_equal(field[first:], field[first - 1])


def test_no_projection_at_all_keeps_the_learning_rate():
    # p₀ = g₀ = 0: rule (9) is 0/0; η is kept and λ sharpens linearly by η·a.
    traj = _simulate(2.0, num_steps=50, p0=0.0, g0=0.0)
    np.testing.assert_array_equal(traj.learning_rate, np.full(51, 0.05))
    np.testing.assert_allclose(traj.sharpness, 18.0 + 0.05 * 5e-2 * np.arange(51), rtol=1e-12)
    np.testing.assert_array_equal(traj.p, np.zeros(51))
    np.testing.assert_array_equal(traj.g, np.zeros(51))
    assert not bool(traj.diverged[-1])


def test_only_the_small_eigenvalue_gives_sigma_over_nu():
    traj = _simulate(1.5, num_steps=20, p0=0.0)
    np.testing.assert_allclose(traj.learning_rate[1:], 1.5 / 0.1, rtol=1e-12)
    np.testing.assert_array_equal(traj.p, np.zeros(21))
    g = np.asarray(traj.g)
    np.testing.assert_allclose(g[2:] / g[1:-1], (1 - 1.5) ** 2, rtol=1e-12)


def test_only_the_top_eigenvalue_gives_sigma_over_lambda():
    traj = _simulate(2.0, num_steps=20, g0=0.0)
    np.testing.assert_allclose(traj.learning_rate[1:], 2.0 / traj.sharpness[:-1], rtol=1e-12)


def test_zero_initial_learning_rate_is_flagged_not_nan():
    traj = _simulate(2.0, num_steps=5, learning_rate0=0.0)
    assert np.all(np.asarray(traj.diverged))
    for field in traj[:5]:
        assert not np.any(np.isnan(np.asarray(field)))


def test_new_numbers_do_not_retrace():
    traces = 0

    def run(*args):
        nonlocal traces
        traces += 1
        return dynamics.simulate_cdat(*args, num_steps=11)

    jitted = jax.jit(run)
    jitted(5e-2, 1e-1, 0.1, 2.0, 18.0, 0.05, 4.0, 4.0)
    second = jitted(1e-2, 2e-1, 0.3, 1.9, 10.0, 0.1, 1.0, 2.0)
    assert traces == 1
    direct = _direct_eq4(1e-2, 2e-1, 0.3, 1.9, 10.0, 0.1, 1.0, 2.0, 11)
    np.testing.assert_allclose(second.sharpness, direct[1], rtol=1e-12)


def test_float32_stays_close_to_float64():
    f32 = np.float32
    args = (FIG9["a"], FIG9["b"], FIG9["nu"], 2.0, 18.0, 0.05, 4.0, 4.0)
    traj = dynamics.simulate_cdat(*(f32(v) for v in args), num_steps=600)
    for field in traj[:5]:
        assert field.dtype == jnp.float32
    ref = _simulate(2.0)
    np.testing.assert_allclose(traj.sharpness, ref.sharpness, rtol=1e-4)
    # y is a difference of O(1) numbers: float32 keeps it at ~1e-5 absolute over 600 steps.
    np.testing.assert_allclose(traj.y, ref.y, atol=1e-4)
