"""simulate_constant_learning_rate: eq (4) with a fixed η (Fig. 4, blue), and where it diverges."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core.dynamics as dynamics

# Fig. 4 (constant learning rate) parameters, Appendix C of Roulet et al. (2024).
A, B, ETA = 3e-2, 3e-1, 1.0
# Initial conditions found by a grid search (see the docstring) where λ oscillates around 2/η.
OSCILLATING = [(1.98, 0.3), (2.0, 0.3), (2.02, 0.3), (2.0, 0.35)]


def _reference(a, b, eta, lam, x, num_steps):
    """Eq (4) iterated in plain Python floats."""
    lams, xs = [lam], [x]
    for _ in range(num_steps):
        x, lam = (1.0 - eta * lam) * x, eta * (a - b * x * x) + lam
        lams.append(lam)
        xs.append(x)
    return np.array(lams), np.array(xs)


def _simulate(lam0, x0, num_steps, a=A, b=B, eta=ETA):
    return dynamics.simulate_constant_learning_rate(a, b, eta, lam0, x0, num_steps=num_steps)


@pytest.mark.parametrize(
    ("a", "b", "eta", "lam0", "x0"), [(A, B, ETA, 1.5, 0.4), (0.1, 2.0, 0.3, 5.0, -0.2)]
)
def test_matches_plain_iteration_of_eq4(a, b, eta, lam0, x0):
    traj = _simulate(lam0, x0, 60, a=a, b=b, eta=eta)
    lams, xs = _reference(a, b, eta, lam0, x0, 60)
    assert not bool(traj.diverged[-1])
    np.testing.assert_allclose(traj.sharpness, lams, rtol=1e-12)
    np.testing.assert_allclose(traj.p, xs**2, rtol=1e-12)
    np.testing.assert_allclose(traj.y, eta * lams - 2.0, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(traj.learning_rate, np.full(61, eta))
    np.testing.assert_array_equal(traj.g, np.zeros(61))


def test_shapes_and_initial_state():
    traj = _simulate(1.7, 0.2, 5)
    for field in traj:
        assert field.shape == (6,)
    assert traj.diverged.dtype == jnp.bool_
    assert float(traj.sharpness[0]) == 1.7
    assert float(traj.p[0]) == pytest.approx(0.04, rel=1e-15)
    assert float(traj.y[0]) == pytest.approx(1.7 - 2.0, rel=1e-15)


@pytest.mark.parametrize(("a", "b", "eta"), [(A, B, ETA), (2e-2, 0.5, 0.5)])
def test_period_two_orbit_at_the_edge(a, b, eta):
    # λ = 2/η, x = ±sqrt(a/b) is an exact period-2 orbit of eq (4).
    traj = _simulate(2.0 / eta, math.sqrt(a / b), 100, a=a, b=b, eta=eta)
    np.testing.assert_allclose(traj.sharpness, 2.0 / eta, rtol=1e-10)
    np.testing.assert_allclose(traj.p, a / b, rtol=1e-10)
    np.testing.assert_allclose(traj.y, 0.0, atol=1e-10)


@pytest.mark.parametrize(("a", "b", "eta"), [(A, B, ETA), (2e-2, 0.5, 0.5), (0.1, 1.0, 1.0)])
def test_perturbations_of_the_orbit_grow_as_documented(a, b, eta):
    # Linearised map has eigenvalues 1 ± iη·sqrt(2a): rotation period 2π/atan(η·sqrt(2a)),
    # amplitude growth sqrt(1 + 2η²a) per step. The discrete model is unstable at the edge.
    rate = math.sqrt(1.0 + 2.0 * eta**2 * a)
    period = math.ceil(2.0 * math.pi / math.atan(eta * math.sqrt(2.0 * a)))
    gap = int(math.log(1e4) / math.log(rate))  # amplitude 1e-8 -> 1e-4: still linear
    traj = _simulate((2.0 + 1e-8) / eta, math.sqrt(a / b), gap + period, a=a, b=b, eta=eta)
    y = np.abs(np.asarray(traj.y))
    measured = math.log(y[gap : gap + period].max() / y[:period].max()) / gap
    assert measured == pytest.approx(math.log(rate), rel=0.1)
    # ... and y oscillates: it changes sign within every period.
    signs = np.sign(np.asarray(traj.y)[gap : gap + period])
    assert (signs > 0).any() and (signs < 0).any()


@pytest.mark.parametrize(("lam0", "x0"), OSCILLATING)
def test_oscillates_around_the_edge_for_the_figure_horizon(lam0, x0):
    edge = 2.0 / ETA
    traj = _simulate(lam0, x0, 100)
    lam = np.asarray(traj.sharpness)[50:]
    assert not bool(traj.diverged[-1])
    assert abs(lam.mean() - edge) <= 0.03 * edge
    assert np.abs(lam - edge).max() < 0.5
    crossings = np.count_nonzero(np.diff(np.sign(lam - edge)))
    assert crossings >= 3


@pytest.mark.parametrize(("lam0", "x0"), OSCILLATING)
def test_the_same_runs_diverge_later(lam0, x0):
    traj = _simulate(lam0, x0, 400)
    assert bool(traj.diverged[-1])
    first = int(np.argmax(traj.diverged))
    assert 100 < first < 400
    for field in traj[:5]:
        assert np.all(np.isfinite(field))


def test_far_above_the_edge_diverges_fast():
    lam0s, x0s = np.meshgrid([2.8, 3.0, 3.5, 4.0], [1e-3, 1e-2, 0.1, 0.3, 1.0], indexing="ij")
    run = jax.vmap(lambda lam, x: _simulate(lam, x, 25).diverged[-1])
    assert np.all(run(jnp.asarray(lam0s.ravel()), jnp.asarray(x0s.ravel())))


def test_large_projection_diverges_fast():
    lam0s, x0s = np.meshgrid([0.3, 0.6, 1.5, 2.0, 2.5], [2.5, 2.8], indexing="ij")
    run = jax.vmap(lambda lam, x: _simulate(lam, x, 15).diverged[-1])
    assert np.all(run(jnp.asarray(lam0s.ravel()), jnp.asarray(x0s.ravel())))


def test_divergence_freezes_the_state_and_never_gives_nan():
    traj = _simulate(3.0, 0.3, 60)
    flags = np.asarray(traj.diverged)
    first = int(np.argmax(flags))
    assert 0 < first < 60
    assert np.all(flags[first:]) and not np.any(flags[:first])
    for field in traj[:5]:
        field = np.asarray(field)
        assert np.all(np.isfinite(field))
        np.testing.assert_array_equal(field[first:], field[first - 1])
    # The last finite state is already a blow-up, so the divergence is visible in the values.
    assert float(traj.p[first - 1]) > 1e100
    # The rejected step is the one the plain iteration makes non-finite.
    with np.errstate(over="ignore", invalid="ignore"):
        lams, xs = _reference(A, B, ETA, 3.0, 0.3, first)
        ps = xs**2
    assert np.all(np.isfinite(lams[:first])) and np.all(np.isfinite(ps[:first]))
    assert not (np.isfinite(lams[first]) and np.isfinite(ps[first]))


def test_zero_projection_sharpens_linearly_forever():
    traj = _simulate(0.5, 0.0, 200)
    np.testing.assert_allclose(traj.sharpness, 0.5 + A * ETA * np.arange(201), rtol=1e-12)
    np.testing.assert_array_equal(traj.p, np.zeros(201))
    assert not bool(traj.diverged[-1])


def test_sharpness_at_one_over_eta_kills_the_projection():
    traj = _simulate(1.0 / ETA, 0.7, 10)
    np.testing.assert_array_equal(traj.p[1:], np.zeros(10))


def test_new_numbers_do_not_retrace():
    traces = 0

    def run(a, b, eta, lam0, x0):
        nonlocal traces
        traces += 1
        return dynamics.simulate_constant_learning_rate(a, b, eta, lam0, x0, num_steps=13)

    jitted = jax.jit(run)
    first = jitted(A, B, ETA, 1.9, 0.3)
    second = jitted(0.05, 0.2, 0.7, 2.5, 0.1)
    assert traces == 1
    assert float(second.learning_rate[0]) == 0.7
    np.testing.assert_allclose(second.sharpness, _simulate(2.5, 0.1, 13, 0.05, 0.2, 0.7).sharpness)
    assert not np.allclose(first.sharpness, second.sharpness)


def test_float32_inputs_give_float32():
    f32 = np.float32
    traj = dynamics.simulate_constant_learning_rate(
        f32(A), f32(B), f32(ETA), f32(1.98), f32(0.3), num_steps=20
    )
    for field in traj[:5]:
        assert field.dtype == jnp.float32
    ref = _simulate(1.98, 0.3, 20)
    np.testing.assert_allclose(traj.sharpness, ref.sharpness, rtol=1e-4)


def test_zero_steps_returns_the_initial_state():
    traj = _simulate(1.5, 0.2, 0)
    assert traj.sharpness.shape == (1,)
    assert float(traj.sharpness[0]) == 1.5


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        _simulate(1.5, 0.2, -1)
    with pytest.raises(ValueError, match="x0 must be a scalar"):
        dynamics.simulate_constant_learning_rate(A, B, ETA, 1.5, jnp.ones(2), num_steps=3)


def test_every_grid_start_diverges_within_400_steps_except_one_over_eta():
    # The docstring's honesty claim: no initial condition on this grid gives a lasting
    # oscillation; only λ₀ = 1/η (x₁ = 0 exactly) escapes, by sharpening linearly for ever.
    lam0s = np.round(np.arange(0.05, 4.0001, 0.05), 2)
    x0s = np.geomspace(1e-3, 3.0, 40)
    grid_lam, grid_x = np.meshgrid(lam0s, x0s, indexing="ij")
    run = jax.jit(jax.vmap(lambda lam, x: _simulate(lam, x, 400).diverged[-1]))
    diverged = np.asarray(run(jnp.asarray(grid_lam.ravel()), jnp.asarray(grid_x.ravel())))
    diverged = diverged.reshape(grid_lam.shape)
    at_one = lam0s == 1.0 / ETA
    assert at_one.sum() == 1
    assert np.all(diverged[~at_one]) and not np.any(diverged[at_one])
