"""Invariants of power iteration, Lanczos and hessian_sharpness, each with a fixed twin.

Operators are 8 x 8 (symmetric, shifted so some are indefinite), so the jitted solvers below
compile once per (num_iters, k) and hypothesis only changes values. (hessian_sharpness is
Lanczos on the HVP; its accuracy and certificate are checked in tests/test_sharpness.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import cdat_core as cc
from cdat_core import testing

N = 8
seeds = st.integers(0, 2**31)
shifts = st.floats(0.0, 1.0)  # A - shift·λ_max·I: from positive definite to indefinite


@functools.partial(jax.jit, static_argnames=("num_iters", "k"))
def lanczos(matrix, v0, num_iters=N, k=3):
    return cc.lanczos(lambda v: matrix @ v, v0, num_iters=num_iters, k=k, rtol=0.0)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def power(matrix, v0, num_iters=1000):
    return cc.power_iteration(lambda v: matrix @ v, v0, num_iters=num_iters, rtol=0.0)


def _operator(spd, shift):
    """The symmetric matrix A - shift·λ_max(A)·I and its eigenvalues (descending)."""
    matrix = spd.matrix - shift * spd.eigenvalues[0] * np.eye(N)
    return matrix, spd.eigenvalues - shift * spd.eigenvalues[0]


def _vector(seed, n=N):
    return np.random.default_rng(seed).standard_normal(n)


def check_rayleigh_quotient_below_lambda_max(spd, shift, seed):
    matrix, _ = _operator(spd, shift)
    top = float(lanczos(jnp.asarray(matrix), jnp.asarray(_vector(seed))).eigenvalues[0])
    tol = 1e-10 * np.max(np.abs(spd.eigenvalues))
    rng = np.random.default_rng(seed + 1)
    for u in rng.standard_normal((16, N)):
        assert u @ matrix @ u / (u @ u) <= top + tol
    # Power iteration's value is itself a Rayleigh quotient: it never exceeds λ_max.
    mu = float(power(jnp.asarray(matrix), jnp.asarray(_vector(seed + 2))).eigenvalues[0])
    assert mu <= top + tol


@given(testing.spd_matrices(N, N), shifts, seeds)
def test_rayleigh_quotient_below_lambda_max(spd, shift, seed):
    check_rayleigh_quotient_below_lambda_max(spd, shift, seed)


def test_rayleigh_quotient_below_lambda_max_twin():
    spd = testing.matrix_with_spectrum(np.geomspace(10.0, 0.01, N), seed=0)
    check_rayleigh_quotient_below_lambda_max(spd, 0.7, 1)


def check_lanczos_beats_power_at_equal_matvecs(spd, shift, seed, matvecs):
    matrix, eigenvalues = _operator(spd, shift)
    v0 = jnp.asarray(_vector(seed))
    lz = lanczos(jnp.asarray(matrix), v0, num_iters=matvecs, k=1)
    pw = power(jnp.asarray(matrix), v0, num_iters=matvecs)
    assert int(lz.num_iters) == int(pw.num_iters) == matvecs
    tol = 1e-10 * np.max(np.abs(eigenvalues))
    assert (
        eigenvalues[0] - float(lz.eigenvalues[0]) <= eigenvalues[0] - float(pw.eigenvalues[0]) + tol
    )


@given(testing.spd_matrices(N, N), shifts, seeds, st.sampled_from([2, 4]))
def test_lanczos_beats_power_at_equal_matvecs(spd, shift, seed, matvecs):
    check_lanczos_beats_power_at_equal_matvecs(spd, shift, seed, matvecs)


def test_lanczos_beats_power_at_equal_matvecs_twin():
    spd = testing.matrix_with_spectrum(np.linspace(5.0, 4.0, N), seed=2)  # slow for power
    check_lanczos_beats_power_at_equal_matvecs(spd, 0.0, 3, 4)


def check_eigenvalues_scale_with_operator(spd, shift, seed, scale):
    matrix, _ = _operator(spd, shift)
    v0 = jnp.asarray(_vector(seed))
    base = lanczos(jnp.asarray(matrix), v0)
    scaled = lanczos(jnp.asarray(scale * matrix), v0)
    atol = 1e-10 * scale * np.max(np.abs(spd.eigenvalues))
    np.testing.assert_allclose(scaled.eigenvalues, scale * base.eigenvalues, rtol=1e-9, atol=atol)


@given(testing.spd_matrices(N, N), shifts, seeds, st.floats(1e-3, 1e3))
def test_eigenvalues_scale_with_operator(spd, shift, seed, scale):
    check_eigenvalues_scale_with_operator(spd, shift, seed, scale)


def test_eigenvalues_scale_with_operator_twin():
    spd = testing.matrix_with_spectrum(np.linspace(3.0, 0.5, N), seed=4)
    check_eigenvalues_scale_with_operator(spd, 0.5, 5, 37.0)


def check_orthogonal_change_of_basis(spd, shift, seed, matvecs):
    # Krylov spaces are equivariant: Q A Qᵀ from Q v0 gives the same Ritz values and Q x.
    matrix, eigenvalues = _operator(spd, shift)
    q, _ = np.linalg.qr(np.random.default_rng(seed + 7).standard_normal((N, N)))
    v0 = _vector(seed)
    base = lanczos(jnp.asarray(matrix), jnp.asarray(v0), num_iters=matvecs, k=1)
    moved = lanczos(jnp.asarray(q @ matrix @ q.T), jnp.asarray(q @ v0), num_iters=matvecs, k=1)
    atol = 1e-9 * np.max(np.abs(eigenvalues))
    np.testing.assert_allclose(moved.eigenvalues, base.eigenvalues, rtol=1e-9, atol=atol)
    if eigenvalues[0] - eigenvalues[-1] > 1e-6 * np.max(np.abs(eigenvalues)):
        # (For a multiple of I every vector is an eigenvector: Lanczos breaks down and its
        # restart vectors are fixed in the standard basis, so only the values are equivariant.)
        x, y = np.asarray(moved.eigenvectors[0]), q @ np.asarray(base.eigenvectors[0])
        np.testing.assert_allclose(abs(float(x @ y)), 1.0, atol=1e-7)


@given(testing.spd_matrices(N, N), shifts, seeds, st.sampled_from([2, 4]))
def test_orthogonal_change_of_basis(spd, shift, seed, matvecs):
    check_orthogonal_change_of_basis(spd, shift, seed, matvecs)


def test_orthogonal_change_of_basis_twin():
    spd = testing.matrix_with_spectrum(np.geomspace(2.0, 0.1, N), seed=6)
    check_orthogonal_change_of_basis(spd, 0.3, 7, 4)
