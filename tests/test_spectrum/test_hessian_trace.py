"""hessian_trace: Hutchinson and Hutch++ against dense traces of chosen spectra (float64).

One compiled program per method: the matrix, the preconditioner and the key are traced.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import testing

N = 16


def _quad(w, a):
    return 0.5 * w @ (a @ w)


TRACES = []


@jax.jit
def _hutchinson(a, pre, key):
    TRACES.append("hutchinson")
    return cc.hessian_trace(_quad, jnp.zeros(N), a, key=key, num_probes=64, preconditioner=pre)


@jax.jit
def _hutchpp(a, key):
    TRACES.append("hutch++")
    return cc.hessian_trace(_quad, jnp.zeros(N), a, key=key, num_probes=12, method="hutch++")


def _rotated(spectrum, seed=0):
    return testing.matrix_with_spectrum(spectrum, seed=seed).matrix


def test_diagonal_hessian_is_exact_with_zero_error():
    h = np.linspace(-1.0, 3.0, N)
    out = _hutchinson(jnp.diag(h), jnp.ones(N), jax.random.key(0))
    np.testing.assert_allclose(float(out.trace), h.sum(), rtol=1e-13)
    assert float(out.standard_error) == 0.0 and int(out.num_matvecs) == 64
    np.testing.assert_allclose(out.samples, h.sum(), rtol=1e-13)  # every probe: tr(H)
    # Preconditioned: tr(P⁻¹H).
    p = np.linspace(0.5, 2.0, N)
    out = _hutchinson(jnp.diag(h), jnp.asarray(p), jax.random.key(1))
    np.testing.assert_allclose(float(out.trace), np.sum(h / p), rtol=1e-13)


def test_rotated_hessian_within_the_stated_error_and_the_error_is_right():
    a = _rotated(np.linspace(0.1, 4.0, N))
    # Var(vᵀAv) = 2 Σ_{i≠j} A_ij² for Rademacher v: the standard error of 64 probes.
    true_se = np.sqrt(2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)) / 64)
    outs = [_hutchinson(jnp.asarray(a), jnp.ones(N), jax.random.key(s)) for s in range(30)]
    errors = np.array([float(o.trace) - np.trace(a) for o in outs])
    stated = np.array([float(o.standard_error) for o in outs])
    assert np.all(np.abs(errors) <= 4 * stated)
    assert np.mean(np.abs(errors) <= 2 * stated) >= 0.8  # ~95% expected
    np.testing.assert_allclose(np.median(stated), true_se, rtol=0.2)
    np.testing.assert_allclose(np.std(errors), true_se, rtol=0.35)  # 30 runs: a loose check


def test_hutch_plus_plus_is_exact_on_low_rank_and_unbiased_otherwise():
    # Budget 12: 4 sketch vectors capture a rank-3 Hessian, so the deflated part is 0.
    low = _rotated([5.0, 2.0, -1.0] + [0.0] * (N - 3), seed=1)
    out = _hutchpp(jnp.asarray(low), jax.random.key(0))
    np.testing.assert_allclose(float(out.trace), 6.0, rtol=1e-10)
    assert float(out.standard_error) < 1e-10 and out.samples.shape == (4,)
    assert int(out.num_matvecs) == 12
    # Full rank with a decaying spectrum: within the stated error, and far below Hutchinson's.
    a = _rotated(testing.log_spaced_spectrum(N, 1e3, top=10.0), seed=2)
    outs = [_hutchpp(jnp.asarray(a), jax.random.key(s)) for s in range(40)]
    errors = np.array([float(o.trace) - np.trace(a) for o in outs])
    # Only r = 4 residual probes: error / standard error is about Student's t with 3 degrees
    # of freedom, 95% of which lies within 3.18.
    t = np.abs(errors) / np.array([float(o.standard_error) for o in outs])
    assert np.mean(t <= 3.18) >= 0.85
    hutch = np.sqrt(2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)) / 12)  # at 12 products
    # (numpy's Hutch++ on this matrix, 2000 runs: RMS error 2.16 against Hutchinson's 4.29)
    assert np.sqrt(np.mean(errors**2)) < 0.75 * hutch


def test_compiles_once():
    a = _rotated(np.linspace(0.1, 4.0, N))
    for run in (
        lambda s: _hutchinson(a * s, jnp.full(N, float(s)), jax.random.key(s)),
        lambda s: _hutchpp(a * s, jax.random.key(s)),
    ):
        run(1)
        count = len(TRACES)
        traces = {float(run(s).trace) for s in (2, 3)}
        assert count >= 1 and len(TRACES) == count and len(traces) == 2


def test_bad_arguments_are_named():
    f, w, key = (lambda w: jnp.sum(w**4)), jnp.ones(3), jax.random.key(0)
    with pytest.raises(ValueError, match="method"):
        cc.hessian_trace(f, w, key=key, method="xtrace")
    with pytest.raises(ValueError, match="num_probes must be at least 2"):
        cc.hessian_trace(f, w, key=key, num_probes=1)
    with pytest.raises(ValueError, match="num_probes must be at least 4"):
        cc.hessian_trace(f, w, key=key, num_probes=3, method="hutch++")
    with pytest.raises(TypeError, match="key="):
        cc.hessian_trace(f, w, key=None)
    with pytest.raises(TypeError, match="key must be"):
        cc.hessian_trace(f, w, key=jnp.zeros(2))
    with pytest.raises(ValueError, match="preconditioner"):
        cc.hessian_trace(f, w, key=key, preconditioner={"a": w})
