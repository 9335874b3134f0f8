"""_lanczos_tridiagonal and its small problem: T = QᵀAQ, the top-k tridiagonal solver, the
stop-test schedule.

The tridiagonal is what spectral tools (stochastic Lanczos quadrature) reuse, so it is
checked against its definition; the solver against numpy's dense eigh.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdat_core import _krylov, testing
from cdat_core.eig import _lanczos_tridiagonal


@functools.partial(jax.jit, static_argnames=("num_iters",))
def _run(matrix, v0, num_iters):
    return _lanczos_tridiagonal(lambda v: matrix @ v, v0, num_iters=num_iters)


def _dense_t(tri):
    size = int(tri.size)
    a, b = np.asarray(tri.alphas)[:size], np.asarray(tri.betas)[: size - 1]
    return np.diag(a) + np.diag(b, 1) + np.diag(b, -1)


def test_tridiagonal_is_the_projection_of_the_operator():
    spd = testing.matrix_with_spectrum(np.geomspace(10.0, 0.01, 30), seed=0)
    v0 = np.random.default_rng(0).standard_normal(30)
    tri = _run(jnp.asarray(spd.matrix), jnp.asarray(v0), 12)
    assert int(tri.size) == int(tri.num_iters) == 12 and not bool(tri.failed)
    q = np.asarray(tri.basis)[:12].T
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-12)
    np.testing.assert_allclose(q.T @ spd.matrix @ q, _dense_t(tri), atol=1e-10)
    np.testing.assert_allclose(q[:, 0], v0 / np.linalg.norm(v0), atol=1e-14)
    # betas[size - 1] is the norm of the residual left after the last step.
    r = spd.matrix @ q[:, -1] - q @ (q.T @ spd.matrix @ q[:, -1])
    np.testing.assert_allclose(float(tri.betas[11]), np.linalg.norm(r), rtol=1e-8)
    # The stored Ritz pairs are the top eigenpairs of T.
    np.testing.assert_allclose(tri.ritz.values[0], np.linalg.eigvalsh(_dense_t(tri))[-1])


def test_breakdown_is_a_zero_beta_and_a_restart():
    # A start in a 3-dimensional invariant subspace: K_3 is invariant, betas[2] = 0 marks
    # the end of the first block; the basis then continues orthonormally.
    spd = testing.matrix_with_spectrum([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], seed=1)
    v0 = spd.eigenvectors[:, :3] @ np.array([1.0, 2.0, 3.0])
    tri = _run(jnp.asarray(spd.matrix), jnp.asarray(v0), 6)
    assert int(tri.size) == 6
    assert float(tri.betas[2]) == 0.0 and float(tri.dropped[2]) < 1e-7
    assert np.all(np.asarray(tri.betas)[:2] > 0.1)
    np.testing.assert_allclose(np.linalg.eigvalsh(_dense_t(tri)[:3, :3]), [3.0, 4.0, 5.0])
    q = np.asarray(tri.basis)[:6].T
    np.testing.assert_allclose(q.T @ q, np.eye(6), atol=1e-12)


def _padded(rng, m, size, kind):
    if kind == "random":
        a, b = rng.standard_normal(m), rng.uniform(0.1, 1.0, m)
    elif kind == "graded":  # tiny couplings: nearly decoupled, eigenvalues close to a
        a, b = np.linspace(1.0, 1.0 + 1e-6, m), 10.0 ** rng.uniform(-12, -4, m)
    else:  # a zero block
        a, b = np.zeros(m), np.zeros(m)
    return a, b


@pytest.mark.parametrize("kind", ["random", "graded", "zero"])
@pytest.mark.parametrize(("m", "size", "k"), [(12, 12, 3), (12, 7, 3), (12, 2, 3), (1, 1, 1)])
def test_ritz_pairs_match_dense_eigh(kind, m, size, k):
    rng = np.random.default_rng(m + size + k)
    a, b = _padded(rng, m, size, kind)
    pairs = jax.jit(_krylov.ritz_pairs, static_argnums=4)(
        jnp.asarray(a), jnp.asarray(b), jnp.zeros(m), jnp.asarray(size, jnp.int32), k
    )
    t = np.diag(a[:size]) + np.diag(b[: size - 1], 1) + np.diag(b[: size - 1], -1)
    values, vectors = np.linalg.eigh(t)
    values, vectors = values[::-1], vectors[:, ::-1]
    count = min(k, size)
    scale = float(pairs.scale)
    np.testing.assert_allclose(pairs.values[:count], values[:count], atol=1e-14 * max(scale, 1))
    assert np.all(np.asarray(pairs.values)[count:] == 0.0)
    y = np.asarray(pairs.vectors)[:size, :count]
    assert np.all(np.asarray(pairs.vectors)[size:] == 0.0)
    np.testing.assert_allclose(y.T @ y, np.eye(count), atol=1e-10)
    # The residual bound is an upper bound on the true residual of the Ritz pair in T's
    # coordinates, ||T y - θ y|| + |β_last y_last| (here β_last = b[size - 1]).
    for i in range(count):
        theta = float(pairs.values[i])
        true = np.linalg.norm(t @ y[:, i] - theta * y[:, i]) + abs(b[size - 1] * y[-1, i])
        # (numpy's own rounding in `true` is allowed for: a few eps·||T||)
        assert true <= float(pairs.residuals[i]) + 4 * np.finfo(np.float64).eps * scale


def test_ritz_pairs_float32():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(20).astype(np.float32), rng.uniform(0.1, 1, 20).astype(np.float32)
    pairs = _krylov.ritz_pairs(
        jnp.asarray(a), jnp.asarray(b), jnp.zeros(20, jnp.float32), jnp.asarray(20), 2
    )
    assert pairs.values.dtype == pairs.vectors.dtype == pairs.residuals.dtype == jnp.float32
    t = np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1)
    top = np.linalg.eigvalsh(t.astype(np.float64))[::-1][:2]
    np.testing.assert_allclose(pairs.values, top, rtol=1e-5)


@pytest.mark.parametrize("count", [1, 5, 8, 20, 100, 400])
def test_stop_test_schedule(count):
    count = jnp.asarray(count, jnp.int32)

    def nxt(ratio, last_check, last_ratio):
        return int(
            _krylov.next_check(
                count,
                jnp.asarray(ratio),
                jnp.asarray(last_check, jnp.int32),
                jnp.asarray(last_ratio),
            )
        )

    c = int(count)
    cap = max(c // 4, 1) if c >= 8 else 1
    # No rate estimate (first test, or no progress): as late as allowed.
    assert nxt(10.0, 0, np.inf) == c + cap
    assert nxt(10.0, c - 1, 5.0) == c + cap
    # Fast progress, close to the target: the very next step.
    assert nxt(1.5, c - 1, 100.0) == c + 1
    # Slow progress (factor 10 over 2 steps; 10^6 left, ~12 steps): about half of it, capped.
    assert c + min(5, cap) <= nxt(1e6, c - 2, 1e7) <= c + min(6, cap)
