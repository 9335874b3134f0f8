"""power_iteration: accuracy against numpy eigh, stopping rule, degenerate operators, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import testing


def _start(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(n))


def _residual(matrix, x, value):
    return float(np.linalg.norm(matrix @ x - value * x))


@pytest.mark.parametrize("seed", range(3))
def test_matches_eigh_float64(seed, power_dense):
    spectrum = np.concatenate([[10.0, 6.0], np.linspace(4.0, -3.0, 14)])
    spd = testing.matrix_with_spectrum(spectrum, seed=seed)
    reference = np.linalg.eigh(spd.matrix)

    res = power_dense(jnp.asarray(spd.matrix), _start(16, seed), 1e-9)

    assert res.eigenvalues.shape == (1,) and res.eigenvectors.shape == (1, 16)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues[0], reference.eigenvalues[-1], rtol=1e-6)
    alignment = abs(float(np.dot(res.eigenvectors[0], reference.eigenvectors[:, -1])))
    assert alignment >= 1 - 1e-6
    np.testing.assert_allclose(np.linalg.norm(res.eigenvectors[0]), 1.0, rtol=1e-12)


def test_converged_certifies_relative_accuracy(power_dense):
    # rtol = 1e-3: the residual test guarantees an eigenvalue within rtol |mu| of mu.
    spd = testing.matrix_with_spectrum(np.linspace(5.0, 0.1, 12), seed=4)
    res = power_dense(jnp.asarray(spd.matrix), _start(12, 4), 1e-3)
    value, vector = float(res.eigenvalues[0]), np.asarray(res.eigenvectors[0])
    assert bool(res.converged)
    assert _residual(spd.matrix, vector, value) <= 1e-3 * abs(value)
    assert np.min(np.abs(spd.eigenvalues - value)) <= 1e-3 * abs(value)
    # A looser tolerance stops earlier, a tighter one later.
    loose = power_dense(jnp.asarray(spd.matrix), _start(12, 4), 1e-1)
    tight = power_dense(jnp.asarray(spd.matrix), _start(12, 4), 1e-8)
    assert int(loose.num_iters) < int(res.num_iters) < int(tight.num_iters)


def test_pytree_operator_through_hvp():
    spd = testing.matrix_with_spectrum([8.0, 3.0, 2.0, 1.0, 0.5, 0.25], seed=1)
    q = testing.quadratic(spd, seed=1)  # params {"a": (3,), "b": {"c": (1, 3), "d": None}}
    v0 = jax.tree.map(jnp.ones_like, q.params)

    res = cc.power_iteration(lambda v: cc.hvp(q.fun, q.params, v), v0, rtol=1e-10)

    assert jax.tree.structure(res.eigenvectors) == jax.tree.structure(q.params)
    assert res.eigenvectors["b"]["c"].shape == (1, 1, 3)
    np.testing.assert_allclose(res.eigenvalues[0], 8.0, rtol=1e-6)


def test_exact_eigenvector_start_stops_after_one_product(power_dense):
    spd = testing.matrix_with_spectrum([3.0, 2.0, 1.0, 0.5, 0.2, 0.1], seed=2)
    for i in (0, 2):  # the top eigenvector and another one: both are fixed points
        res = power_dense(jnp.asarray(spd.matrix), jnp.asarray(spd.eigenvectors[:, i]), 1e-3)
        assert int(res.num_iters) == 1 and bool(res.converged)
        np.testing.assert_allclose(res.eigenvalues[0], spd.eigenvalues[i], rtol=1e-12)


def test_zero_operator_gives_certified_zero(power_dense):
    # 0 is an exact eigenvalue (absolute floor: relative accuracy is moot at 0).
    res = power_dense(jnp.zeros((6, 6)), _start(6), 1e-3)
    assert float(res.eigenvalues[0]) == 0.0
    assert bool(res.converged)
    assert int(res.num_iters) == 1  # stopped at the first (null) product
    assert np.all(np.isfinite(res.eigenvectors))
    never = power_dense(jnp.zeros((6, 6)), _start(6), 0.0)
    assert int(never.num_iters) == 1 and float(never.eigenvalues[0]) == 0.0


@pytest.mark.parametrize("start", [np.zeros(6), np.array([1.0, np.nan, 0.0, 2.0, 1.0, 1.0])])
def test_zero_or_nonfinite_start_gives_zero_not_converged(start, power_dense):
    matrix = jnp.asarray(testing.matrix_with_spectrum([3.0, 2.0, 1.0, 0.5, 0.2, 0.1]).matrix)
    res = power_dense(matrix, jnp.asarray(start), 1e-3)
    assert float(res.eigenvalues[0]) == 0.0
    assert not bool(res.converged)
    assert int(res.num_iters) == 0
    assert np.all(np.isfinite(res.eigenvectors))


def test_nonfinite_matvec_keeps_last_finite_estimate(power_dense):
    res = power_dense(jnp.full((6, 6), jnp.nan), _start(6), 1e-3)
    assert float(res.eigenvalues[0]) == 0.0 and not bool(res.converged)
    assert np.all(np.isfinite(res.eigenvectors))


def test_negative_dominant_eigenvalue_is_reported_with_its_sign(power_dense, lanczos_dense):
    # |λ_min| = 5 > λ_max = 2: power iteration finds -5 (documented), Lanczos finds 2.
    spd = testing.matrix_with_spectrum([2.0, 1.0, 0.5, 0.1, -1.0, -5.0], seed=5)
    matrix = jnp.asarray(spd.matrix)
    res = power_dense(matrix, _start(6, 5), 1e-6)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues[0], -5.0, rtol=1e-5)
    top = lanczos_dense(matrix, _start(6, 5), 0.0, num_iters=6)
    np.testing.assert_allclose(top.eigenvalues[0], 2.0, rtol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_plus_minus_tie_is_not_converged(seed, power_dense):
    # λ = ±4 tie for the largest magnitude: the iterates cycle, the residual stays large.
    spd = testing.matrix_with_spectrum([4.0, 1.0, 0.5, 0.1, -2.0, -4.0], seed=seed)
    res = power_dense(jnp.asarray(spd.matrix), _start(6, seed + 10), 1e-3)
    value = float(res.eigenvalues[0])
    assert not bool(res.converged)
    assert int(res.num_iters) == 1000
    assert -4.0 * (1 - 1e-3) < value < 4.0 * (1 - 1e-3)  # neither +4 nor -4
    # It is still a Rayleigh quotient of the returned unit vector.
    x = np.asarray(res.eigenvectors[0])
    np.testing.assert_allclose(x @ spd.matrix @ x, value, rtol=1e-10, atol=1e-12)


def test_warm_start_tracks_a_perturbed_operator_in_few_products(power_dense):
    spd = testing.matrix_with_spectrum(np.linspace(10.0, 0.1, 20), seed=6)
    perturbation = testing.matrix_with_spectrum(np.linspace(1.0, -1.0, 20), seed=7).matrix
    moved = jnp.asarray(spd.matrix + 1e-3 * perturbation)
    cold = power_dense(moved, _start(20, 6), 1e-3)
    warm = power_dense(moved, jnp.asarray(spd.eigenvectors[:, 0]), 1e-3)
    assert bool(warm.converged) and int(warm.num_iters) <= 3 < int(cold.num_iters)
    dense_top = np.linalg.eigvalsh(np.asarray(moved))[-1]
    np.testing.assert_allclose(warm.eigenvalues[0], dense_top, rtol=1e-3)


def test_float32_dtypes_and_accuracy(power_dense):
    spd = testing.matrix_with_spectrum([4.0, 2.0, 1.0, 0.5, 0.25, 0.1], seed=8)
    matrix = jnp.asarray(spd.matrix, jnp.float32)
    res = power_dense(matrix, jnp.ones(6, jnp.float32), 1e-4)
    assert res.eigenvalues.dtype == jnp.float32 and res.eigenvectors.dtype == jnp.float32
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues[0], 4.0, rtol=1e-5)


def test_same_input_same_bits(power_dense):
    matrix = jnp.asarray(testing.matrix_with_spectrum([3.0, 2.0, 1.0, 0.5, 0.2, 0.1]).matrix)
    a = power_dense(matrix, _start(6), 1e-6)
    b = power_dense(matrix, _start(6), 1e-6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(a.eigenvalues[0], 3.0, rtol=1e-6)


def test_second_jitted_call_with_new_values_does_not_retrace():
    traces = []

    @jax.jit
    def run(matrix, v0, rtol):
        def matvec(v):
            traces.append(1)
            return matrix @ v

        return cc.power_iteration(matvec, v0, num_iters=50, rtol=rtol)

    first = run(jnp.eye(3) * 2.0, jnp.ones(3), 1e-3)
    count = len(traces)
    second = run(jnp.diag(jnp.array([5.0, 1.0, 1.0])), jnp.arange(1.0, 4.0), 1e-6)
    assert count >= 1 and len(traces) == count
    np.testing.assert_allclose(first.eigenvalues[0], 2.0)
    np.testing.assert_allclose(second.eigenvalues[0], 5.0, rtol=1e-6)


def test_trace_time_errors():
    with pytest.raises(TypeError, match="floating"):
        cc.power_iteration(lambda v: v, jnp.arange(3))
    with pytest.raises(ValueError, match="structure"):
        cc.power_iteration(lambda v: {"x": v}, jnp.ones(3))
    with pytest.raises(ValueError, match="shape"):
        cc.power_iteration(lambda v: jnp.ones(4), jnp.ones(3))
    with pytest.raises(ValueError, match="at least 1"):
        cc.power_iteration(lambda v: v, jnp.ones(3), num_iters=0)
    with pytest.raises(TypeError, match="Python int"):
        cc.power_iteration(lambda v: v, jnp.ones(3), num_iters=2.5)
    with pytest.raises(ValueError, match="no entries"):
        cc.power_iteration(lambda v: v, {"a": None})
