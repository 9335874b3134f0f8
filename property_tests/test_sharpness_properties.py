"""hessian_sharpness certifies λ_max: chosen spectra (close top pairs, a dominant negative
eigenvalue, a zero top eigenvalue, tight top clusters), each property with a fixed twin.

The objective is the quadratic ½ wᵀAw over a two-leaf pytree (8 params), so the Hessian is A
and its spectrum is chosen. With 8 params both methods reach the whole space (Lanczos's
default 64 products are clamped to 8; the 8-product check of method="power" spans it), which
is where a Krylov certificate of λ_max holds for every start. (On larger operators a start
nearly orthogonal to the top eigenvector can fool any Krylov method: see the docstrings.)
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
KINDS = ("close_pair", "negative_dominant", "zero_top", "cluster")


def chosen_spectrum(kind, top, gap, seed, n=N):
    """n eigenvalues (descending) of one of the KINDS (as in test_eig_properties.py)."""
    rng = np.random.default_rng(seed)
    if kind == "close_pair":
        head, rest = [top, top * (1 - gap)], rng.uniform(-top, top * (1 - 2 * gap), n - 2)
    elif kind == "negative_dominant":
        head, rest = [-top], rng.uniform(-0.9 * top, 0.5 * top, n - 1)
    elif kind == "zero_top":
        head, rest = [0.0], rng.uniform(-top, -gap * top, n - 1)
    else:
        head = [top, top * (1 - gap), top * (1 - 2 * gap)]
        rest = rng.uniform(-top, top * (1 - 3 * gap), n - 3)
    return np.sort(np.concatenate([head, rest]))[::-1]


EPS = np.finfo(np.float64).eps
seeds = st.integers(0, 2**31)
spectra = st.builds(
    chosen_spectrum,
    st.sampled_from(KINDS),
    testing.floats(0.1, 100.0),
    testing.floats(1e-6, 0.05),
    seeds,
    st.just(N),
)


def _objective(params, matrix):
    x = jnp.concatenate([params["a"], params["b"]])
    return 0.5 * x @ (matrix @ x)


@functools.partial(jax.jit, static_argnames=("method",))
def sharpness(matrix, key, rtol, method):
    params = {"a": jnp.zeros(5), "b": jnp.zeros(3)}
    return cc.hessian_sharpness(_objective, params, matrix, key=key, method=method, rtol=rtol)


def check_converged_means_lambda_max(eigenvalues, seed, rtol, method):
    spd = testing.matrix_with_spectrum(eigenvalues, seed=seed)
    norm = np.max(np.abs(eigenvalues))
    res = sharpness(jnp.asarray(spd.matrix), jax.random.key(seed), rtol, method)
    value = float(res.eigenvalues[0])
    assert value <= eigenvalues[0] + 1e-10 * norm  # a Rayleigh quotient
    if method == "lanczos":
        assert bool(res.converged)  # the whole space: exact, so always certified
    if bool(res.converged):
        tau = rtol * max(abs(value), np.sqrt(EPS) * 3 * norm)
        assert abs(value - eigenvalues[0]) <= tau * (1 + 1e-9) + 1e-14 * norm


@given(spectra, seeds, st.sampled_from([1e-2, 1e-3, 1e-6]), st.sampled_from(["lanczos", "power"]))
def test_converged_means_lambda_max(eigenvalues, seed, rtol, method):
    check_converged_means_lambda_max(eigenvalues, seed, rtol, method)


def test_converged_means_lambda_max_twin():
    for kind in KINDS:
        for method in ("lanczos", "power"):
            check_converged_means_lambda_max(
                chosen_spectrum(kind, 2.0, 1e-3, 5, N), 6, 1e-3, method
            )


def check_power_never_certifies_a_negative_dominant_eigenvalue(top, seed):
    # |λ_min| > λ_max: power iteration converges to λ_min; the check must not call it λ_max.
    eigenvalues = chosen_spectrum("negative_dominant", top, 0.0, seed, N)
    spd = testing.matrix_with_spectrum(eigenvalues, seed=seed)
    res = sharpness(jnp.asarray(spd.matrix), jax.random.key(seed), 1e-3, "power")
    value = float(res.eigenvalues[0])
    assert value > eigenvalues[-1] + 1e-3 * top  # not λ_min
    assert not bool(res.converged) or abs(value - eigenvalues[0]) <= 1e-3 * top


@given(testing.floats(0.1, 100.0), seeds)
def test_power_never_certifies_a_negative_dominant_eigenvalue(top, seed):
    check_power_never_certifies_a_negative_dominant_eigenvalue(top, seed)


def test_power_never_certifies_a_negative_dominant_eigenvalue_twin():
    check_power_never_certifies_a_negative_dominant_eigenvalue(10.0, 0)
