"""Invariants of power iteration and Lanczos, each with a fixed twin.

Operators are 8 x 8 (symmetric, shifted so some are indefinite) or 12 x 12 with a chosen
spectrum (a close top pair, a dominant negative eigenvalue, a zero top eigenvalue, a tight
top cluster), so the jitted solvers below compile once per (num_iters, k) and hypothesis only
changes values. Draws exclude NaN, infinities and subnormals (``testing.floats``). The
certificate of hessian_sharpness is in test_sharpness_properties.py.
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
shifts = testing.floats(0.0, 1.0)  # A - shift·λ_max·I: from positive definite to indefinite


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
    # Lanczos takes a residual below sqrt(eps)·‖A‖ for a breakdown (an invariant subspace), so
    # eigenvalues closer than that to λ_max (a near-identity spectrum, cond. 1 + 2e-8, was
    # drawn) are resolved only to about sqrt(eps)·‖A‖; that is the promise tested here.
    tol = 4 * np.sqrt(np.finfo(np.float64).eps) * np.max(np.abs(spd.eigenvalues))
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


def test_rayleigh_quotient_below_lambda_max_near_identity():
    # The example hypothesis found: top eigenvalue 2e-8 above seven equal ones.
    spd = testing.matrix_with_spectrum(np.array([1.0] + [1.0 - 2e-8] * 7), seed=0)
    check_rayleigh_quotient_below_lambda_max(spd, 0.0, 0)


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


# --------------------------------------------------------------------------------------------
# The certificate and the full space, on chosen spectra.
# --------------------------------------------------------------------------------------------

M = 12
KINDS = ("close_pair", "negative_dominant", "zero_top", "cluster")
EPS = np.finfo(np.float64).eps


def chosen_spectrum(kind, top, gap, seed, n=M):
    """n eigenvalues (descending) of one of the KINDS, scale ``top``, relative gap ``gap``."""
    rng = np.random.default_rng(seed)
    if kind == "close_pair":
        head = [top, top * (1 - gap)]
        rest = rng.uniform(-top, top * (1 - 2 * gap), n - 2)
    elif kind == "negative_dominant":
        head = [-top]
        rest = rng.uniform(-0.9 * top, 0.5 * top, n - 1)
    elif kind == "zero_top":
        head = [0.0]
        rest = rng.uniform(-top, -gap * top, n - 1)
    else:
        head = [top, top * (1 - gap), top * (1 - 2 * gap)]
        rest = rng.uniform(-top, top * (1 - 3 * gap), n - 3)
    return np.sort(np.concatenate([head, rest]))[::-1]


spectra = st.builds(
    chosen_spectrum,
    st.sampled_from(KINDS),
    testing.floats(0.1, 100.0),
    testing.floats(1e-6, 0.05),
    seeds,
)


@functools.partial(jax.jit, static_argnames=("num_iters", "k"))
def lanczos_at(matrix, v0, rtol, num_iters, k):
    return cc.lanczos(lambda v: matrix @ v, v0, num_iters=num_iters, k=k, rtol=rtol)


def check_certificate(eigenvalues, seed, rtol):
    # converged: each returned value is within tau of an eigenvalue, and never above the
    # eigenvalue of its index (interlacing); num_iters < n, so the early stop is at rtol.
    spd = testing.matrix_with_spectrum(eigenvalues, seed=seed)
    norm = np.max(np.abs(eigenvalues))
    res = lanczos_at(jnp.asarray(spd.matrix), jnp.asarray(_vector(seed, M)), rtol, M - 1, 3)
    values = np.asarray(res.eigenvalues)
    assert np.all(values <= eigenvalues[:3] + 1e-10 * norm)
    if bool(res.converged):
        tau = rtol * np.maximum(np.abs(values), np.sqrt(EPS) * 3 * norm)
        distance = np.min(np.abs(values[:, None] - eigenvalues[None, :]), axis=1)
        assert np.all(distance <= tau * (1 + 1e-9) + 1e-14 * norm)
        for value, x in zip(values, np.asarray(res.eigenvectors), strict=True):
            assert np.linalg.norm(spd.matrix @ x - value * x) <= tau.max() * (1 + 1e-9)


@given(spectra, seeds, st.sampled_from([1e-2, 1e-3, 1e-6]))
def test_certificate(eigenvalues, seed, rtol):
    check_certificate(eigenvalues, seed, rtol)


def test_certificate_twin():
    check_certificate(chosen_spectrum("close_pair", 3.0, 1e-3, 0), 1, 1e-3)


def check_full_space_is_exact(eigenvalues, seed):
    # num_iters = n: converged, and the top 3 exact to rounding (no skipped cluster member).
    spd = testing.matrix_with_spectrum(eigenvalues, seed=seed)
    norm = np.max(np.abs(eigenvalues))
    res = lanczos_at(jnp.asarray(spd.matrix), jnp.asarray(_vector(seed, M)), 1e-3, M, 3)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, eigenvalues[:3], rtol=0, atol=1e-9 * norm)


@given(spectra, seeds)
def test_full_space_is_exact(eigenvalues, seed):
    check_full_space_is_exact(eigenvalues, seed)


def test_full_space_is_exact_twin():
    check_full_space_is_exact(chosen_spectrum("cluster", 5.0, 1e-6, 2), 3)
