"""lanczos: top-k against numpy eigh, residual certificate, breakdown safety, errors.

Small operators are 6 x 6 and the accuracy problems 40 x 40, run through the session's
jitted runners (conftest.py) so each shape compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import testing


def _start(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(n))


def _assert_vectors(result, reference_vectors, count=None, rtol=1e-6):
    """The first ``count`` returned vectors are unit, aligned with the reference (up to sign)."""
    for i in range(result.eigenvalues.shape[0] if count is None else count):
        x = np.asarray(result.eigenvectors[i])
        np.testing.assert_allclose(np.linalg.norm(x), 1.0, rtol=1e-10)
        assert abs(float(x @ reference_vectors[:, i])) >= 1 - rtol, i


def _problem(seed):
    spectrum = np.concatenate([[10.0, 7.0, 5.0, 4.0], np.linspace(3.0, -6.0, 36)])
    return testing.matrix_with_spectrum(spectrum, seed=seed)


@pytest.mark.parametrize(("k", "seed"), [(1, 0), (3, 0), (3, 1)])
def test_top_k_match_eigh_float64(k, seed, lanczos_dense):
    spd = _problem(seed)
    values, vectors = np.linalg.eigh(spd.matrix)
    values, vectors = values[::-1], vectors[:, ::-1]

    res = lanczos_dense(jnp.asarray(spd.matrix), _start(40, seed), 1e-10, num_iters=40, k=k)

    assert res.eigenvalues.shape == (k,) and res.eigenvectors.shape == (k, 40)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, values[:k], rtol=1e-6)
    assert np.all(np.diff(np.asarray(res.eigenvalues)) < 0)  # largest first
    _assert_vectors(res, vectors)


def test_converged_certifies_relative_accuracy(lanczos_dense):
    # num_iters < n: the early stop at rtol applies (at num_iters = n only an exact answer
    # stops the run early, see test_full_space_is_exact_with_clusters).
    spd = _problem(2)
    res = lanczos_dense(jnp.asarray(spd.matrix), _start(40, 2), 1e-3, num_iters=39, k=3)
    assert bool(res.converged) and int(res.num_iters) < 39  # stopped early
    for value, x in zip(np.asarray(res.eigenvalues), np.asarray(res.eigenvectors), strict=True):
        residual = np.linalg.norm(spd.matrix @ x - value * x)
        assert residual <= 1e-3 * abs(value) * (1 + 1e-6)
        assert np.min(np.abs(spd.eigenvalues - value)) <= 1e-3 * abs(value)
    full = lanczos_dense(jnp.asarray(spd.matrix), _start(40, 2), 0.0, num_iters=40, k=3)
    assert int(full.num_iters) == 40
    assert np.max(np.abs(full.eigenvalues - spd.eigenvalues[:3])) < np.max(
        np.abs(res.eigenvalues - spd.eigenvalues[:3])
    )


def test_largest_algebraic_not_largest_magnitude(lanczos_dense):
    # A ±4 tie and a dominant negative eigenvalue: Lanczos returns the algebraic top.
    spd = testing.matrix_with_spectrum([4.0, 1.0, 0.5, -2.0, -4.0, -9.0], seed=3)
    res = lanczos_dense(jnp.asarray(spd.matrix), _start(6, 3), 1e-10, num_iters=6, k=3)
    np.testing.assert_allclose(res.eigenvalues, [4.0, 1.0, 0.5], rtol=1e-10)
    assert bool(res.converged)


def test_exact_top_eigenvector_start_is_one_product(lanczos_dense):
    spd = testing.matrix_with_spectrum([6.0, 3.0, 2.0, 1.0, 0.5, 0.1], seed=5)
    res = lanczos_dense(jnp.asarray(spd.matrix), jnp.asarray(spd.eigenvectors[:, 0]), 1e-3, 6)
    assert int(res.num_iters) == 1 and bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues[0], 6.0, rtol=1e-12)
    _assert_vectors(res, spd.eigenvectors)


def test_exact_lower_eigenvector_start(lanczos_dense):
    # Breakdown at the first step. With k = 1 and rtol > 0 the start's (exact, certified)
    # eigenvalue is reported, as documented; with rtol = 0 the restarts explore the
    # complement and find the top eigenvalues.
    spd = testing.matrix_with_spectrum([6.0, 3.0, 2.0, 1.0, 0.5, 0.1], seed=6)
    matrix, start = jnp.asarray(spd.matrix), jnp.asarray(spd.eigenvectors[:, 2])
    stopped = lanczos_dense(matrix, start, 1e-3, num_iters=6, k=1)
    assert int(stopped.num_iters) == 1 and bool(stopped.converged)
    np.testing.assert_allclose(stopped.eigenvalues, [2.0], rtol=1e-12)
    full = lanczos_dense(matrix, start, 0.0, num_iters=6, k=3)
    assert int(full.num_iters) == 6  # rtol = 0: no early stop (and no certificate)
    np.testing.assert_allclose(full.eigenvalues, [6.0, 3.0, 2.0], rtol=1e-10)
    _assert_vectors(full, spd.eigenvectors)


@pytest.mark.parametrize("num_iters", [5, 6])
def test_rank_deficient_operator_converges(num_iters, lanczos_dense):
    # k = 3 > rank 2: the third value is an exact 0, certified through the absolute floor
    # (num_iters = 5 < n: early stop at rtol; 6 = n: stop on the exact answer).
    spd = testing.matrix_with_spectrum([3.0, 2.0, 0.0, 0.0, 0.0, 0.0], seed=7)
    res = lanczos_dense(jnp.asarray(spd.matrix), _start(6, 7), 1e-6, num_iters=num_iters, k=3)
    assert np.all(np.isfinite(res.eigenvalues)) and np.all(np.isfinite(res.eigenvectors))
    np.testing.assert_allclose(res.eigenvalues, [3.0, 2.0, 0.0], atol=1e-12)
    _assert_vectors(res, spd.eigenvectors, count=2)
    x = np.asarray(res.eigenvectors[2])
    np.testing.assert_allclose(spd.matrix @ x, 0.0, atol=1e-12)  # a null vector
    assert bool(res.converged) and int(res.num_iters) == 3  # K_3 is invariant: exact
    top = lanczos_dense(jnp.asarray(spd.matrix), _start(6, 7), 1e-6, num_iters=6, k=1)
    assert bool(top.converged) and int(top.num_iters) <= 3
    np.testing.assert_allclose(top.eigenvalues, [3.0], rtol=1e-12)


def test_zero_operator(lanczos_dense):
    # Every vector is an exact eigenvector of 0: each step breaks down and restarts, and the
    # zero eigenvalues are certified (floor) after k products.
    res = lanczos_dense(jnp.zeros((6, 6)), _start(6), 1e-3, num_iters=6, k=3)
    np.testing.assert_array_equal(res.eigenvalues, [0.0, 0.0, 0.0])
    assert bool(res.converged) and int(res.num_iters) == 3
    gram = np.asarray(res.eigenvectors) @ np.asarray(res.eigenvectors).T
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-12)
    never = lanczos_dense(jnp.zeros((6, 6)), _start(6), 0.0, num_iters=6, k=3)
    assert int(never.num_iters) == 6  # rtol = 0: no early stop


def test_negative_definite_gets_no_spurious_zero(lanczos_dense):
    # -2 I: every vector is an eigenvector, each step breaks down and restarts.
    res = lanczos_dense(-2.0 * jnp.eye(6), _start(6), 1e-3, num_iters=6, k=3)
    np.testing.assert_allclose(res.eigenvalues, [-2.0, -2.0, -2.0], rtol=1e-12)
    assert bool(res.converged) and int(res.num_iters) == 3
    gram = np.asarray(res.eigenvectors) @ np.asarray(res.eigenvectors).T
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-10)


@pytest.mark.parametrize("start", [np.zeros(6), np.array([1.0, np.inf, 0.0, 0.0, 1.0, 2.0])])
def test_zero_or_nonfinite_start_restarts(start, lanczos_dense):
    spd = testing.matrix_with_spectrum([5.0, 4.0, 1.0, 0.5, 0.1, 0.05], seed=8)
    res = lanczos_dense(jnp.asarray(spd.matrix), jnp.asarray(start), 1e-8, num_iters=6, k=3)
    np.testing.assert_allclose(res.eigenvalues, [5.0, 4.0, 1.0], rtol=1e-10)
    assert bool(res.converged)


def test_nonfinite_matvec_gives_finite_unconverged_result(lanczos_dense):
    res = lanczos_dense(jnp.full((6, 6), jnp.nan), _start(6), 1e-3, num_iters=6, k=1)
    assert float(res.eigenvalues[0]) == 0.0 and not bool(res.converged)
    assert np.all(np.isfinite(res.eigenvectors)) and int(res.num_iters) == 1


def test_num_iters_clamped_to_dimension():
    matrix = jnp.asarray(testing.matrix_with_spectrum([3.0, 2.0, 1.0]).matrix)
    res = cc.lanczos(lambda v: matrix @ v, _start(3), num_iters=64, k=3, rtol=0.0)
    assert int(res.num_iters) == 3
    np.testing.assert_allclose(res.eigenvalues, [3.0, 2.0, 1.0], rtol=1e-12)


def test_pytree_operator_with_none_leaf():
    spd = testing.matrix_with_spectrum([8.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05], seed=9)
    q = testing.quadratic(spd, seed=9)
    v0 = jax.tree.map(jnp.ones_like, q.params)
    res = cc.lanczos(lambda v: cc.hvp(q.fun, q.params, v), v0, num_iters=8, k=2, rtol=1e-10)
    assert jax.tree.structure(res.eigenvectors) == jax.tree.structure(q.params)
    assert res.eigenvectors["a"].shape == (2, 4) and res.eigenvectors["b"]["c"].shape == (2, 2, 2)
    np.testing.assert_allclose(res.eigenvalues, [8.0, 3.0], rtol=1e-10)
    top = q.flatten(jax.tree.map(lambda x: x[0], res.eigenvectors))
    assert abs(top @ spd.eigenvectors[:, 0]) >= 1 - 1e-10


def test_float32_dtypes_and_accuracy(lanczos_dense):
    spd = testing.matrix_with_spectrum([4.0, 2.0, 1.0, 0.5, 0.25, 0.1], seed=10)
    matrix = jnp.asarray(spd.matrix, jnp.float32)
    res = lanczos_dense(matrix, jnp.ones(6, jnp.float32), 1e-4, num_iters=6, k=1)
    assert res.eigenvalues.dtype == jnp.float32 and res.eigenvectors.dtype == jnp.float32
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues[0], 4.0, rtol=1e-5)


def test_second_jitted_call_with_new_values_does_not_retrace():
    traces = []

    @jax.jit
    def run(matrix, v0, rtol):
        def matvec(v):
            traces.append(1)
            return matrix @ v

        return cc.lanczos(matvec, v0, num_iters=4, k=2, rtol=rtol)

    first = run(jnp.diag(jnp.array([2.0, 1.0, 0.5, 0.1])), jnp.ones(4), 1e-3)
    count = len(traces)
    second = run(jnp.diag(jnp.array([7.0, 3.0, 1.0, 0.0])), jnp.arange(1.0, 5.0), 0.0)
    assert count >= 1 and len(traces) == count
    np.testing.assert_allclose(first.eigenvalues, [2.0, 1.0], rtol=1e-10)
    np.testing.assert_allclose(second.eigenvalues, [7.0, 3.0], rtol=1e-10)


def test_trace_time_errors():
    with pytest.raises(TypeError, match="floating"):
        cc.lanczos(lambda v: v, jnp.arange(3))
    with pytest.raises(ValueError, match="structure"):
        cc.lanczos(lambda v: [v], jnp.ones(3))
    with pytest.raises(ValueError, match="k=4"):
        cc.lanczos(lambda v: v, jnp.ones(3), k=4)
    with pytest.raises(ValueError, match="k=3"):
        cc.lanczos(lambda v: v, jnp.ones(10), num_iters=2, k=3)
    with pytest.raises(ValueError, match="at least 1"):
        cc.lanczos(lambda v: v, jnp.ones(3), k=0)
    with pytest.raises(TypeError, match="Python int"):
        cc.lanczos(lambda v: v, jnp.ones(3), num_iters=2.5)


def _clustered(seed):
    """Chosen spectra with clusters: random, near-multiple and exactly multiple top values."""
    rng = np.random.default_rng(seed)
    spectra = [
        rng.uniform(0.0, 10.0, 40),  # the case: a random spectrum, top values close
        np.concatenate([[10.0, 10.0 - 1e-4, 10.0 - 2e-4, 9.0, 9.0 - 1e-6], rng.uniform(-5, 8, 35)]),
        np.concatenate([[7.0, 7.0, 7.0, 3.0], rng.uniform(-7.0, 2.0, 36)]),  # multiplicity 3
    ]
    return testing.matrix_with_spectrum(spectra[seed % 3], seed=seed)


@pytest.mark.parametrize("seed", range(6))
def test_full_space_is_exact_with_clusters(seed, lanczos_dense):
    # num_iters = n at the default rtol: no early stop before the answer is exact, so no
    # cluster member is skipped (an early stop at rtol = 1e-3 can: see the docstring).
    spd = _clustered(seed)
    res = lanczos_dense(jnp.asarray(spd.matrix), _start(40, seed), 1e-3, num_iters=40, k=4)
    np.testing.assert_allclose(res.eigenvalues, spd.eigenvalues[:4], rtol=0, atol=1e-8)
    assert bool(res.converged)
    gram = np.asarray(res.eigenvectors) @ np.asarray(res.eigenvectors).T
    np.testing.assert_allclose(gram, np.eye(4), atol=1e-8)
    for value, x in zip(np.asarray(res.eigenvalues), np.asarray(res.eigenvectors), strict=True):
        np.testing.assert_allclose(spd.matrix @ x, value * x, atol=1e-8)


def test_zero_top_eigenvalue_is_certified(lanczos_dense):
    # Spectrum in [-10, 0] with λ_max = 0: relative accuracy is moot at 0; the absolute floor
    # rtol·sqrt(eps)·||A|| certifies it (before: every step ran and converged was False).
    rng = np.random.default_rng(0)
    spd = testing.matrix_with_spectrum(np.concatenate([[0.0], rng.uniform(-10, 0, 39)]), seed=0)
    res = lanczos_dense(jnp.asarray(spd.matrix), _start(40, 1), 1e-3, num_iters=40, k=1)
    assert bool(res.converged)
    x = np.asarray(res.eigenvectors[0])
    floor = 1e-3 * np.sqrt(np.finfo(np.float64).eps) * 10.0
    assert abs(float(res.eigenvalues[0])) <= floor
    assert np.linalg.norm(spd.matrix @ x - float(res.eigenvalues[0]) * x) <= floor


def test_early_stop_reports_certificate_not_index(lanczos_dense):
    # What the early stop promises at rtol, on the kind of spectrum (random, close top
    # values, num_iters < n): each value is within tau of *an* eigenvalue; every value is at
    # most the eigenvalue of its index (interlacing).
    for seed in range(8):
        spd = testing.matrix_with_spectrum(np.random.default_rng(seed).uniform(0, 10, 40), seed)
        res = lanczos_dense(jnp.asarray(spd.matrix), _start(40, seed), 1e-3, num_iters=39, k=4)
        values = np.asarray(res.eigenvalues)
        assert bool(res.converged) and int(res.num_iters) < 39
        tau = 1e-3 * np.maximum(np.abs(values), np.sqrt(np.finfo(np.float64).eps) * 10.0)
        gaps = np.min(np.abs(values[:, None] - spd.eigenvalues[None, :]), axis=1)
        assert np.all(gaps <= tau)
        assert np.all(values <= spd.eigenvalues[:4] + 1e-10)


def test_vmapped_lanes_match_single_calls():
    spd = [testing.matrix_with_spectrum(np.geomspace(5.0, 0.1, 8), seed=s) for s in range(3)]
    matrices = jnp.asarray(np.stack([s.matrix for s in spd]))
    starts = jnp.asarray(np.random.default_rng(0).standard_normal((3, 8)))

    def run(matrix, v0):
        return cc.lanczos(lambda v: matrix @ v, v0, num_iters=6, k=2, rtol=1e-6)

    lanes = jax.jit(jax.vmap(run))(matrices, starts)
    for i in range(3):
        one = jax.jit(run)(matrices[i], starts[i])
        np.testing.assert_allclose(lanes.eigenvalues[i], one.eigenvalues, rtol=1e-12)
        assert bool(lanes.converged[i]) == bool(one.converged)
