"""hessian_sharpness: against eigh(jax.hessian) and scipy eigsh, keys, warm starts, errors.

One small tanh MLP (32 params, float64) throughout; runs go through one jitted runner so
each (method, num_iters, k, preconditioned, warm) combination compiles once. The top-3 runs
all pass a preconditioner (P = 1 gives the Hessian itself) to share one compilation.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg as spla
from jax.flatten_util import ravel_pytree

import cdat_core as cc
from cdat_core import _tree, testing

MLP = testing.mlp((3, 5, 2), num_examples=8, seed=1)
TRACES = []


def loss(params, inputs, targets):
    TRACES.append(1)  # a Python side effect: runs only when JAX traces
    return MLP.loss(params, inputs, targets)


@functools.partial(jax.jit, static_argnames=("method", "num_iters", "k"))
def sharpness(params, key, rtol=1e-3, pre=None, v0=None, method="lanczos", num_iters=None, k=1):
    return cc.hessian_sharpness(
        loss, params, MLP.inputs, MLP.targets, key=key, method=method,
        num_iters=num_iters, k=k, rtol=rtol, preconditioner=pre, v0=v0,
    )  # fmt: skip


@jax.jit
def _hessian(params):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda x: MLP.loss(unravel(x), MLP.inputs, MLP.targets))(flat)


@jax.jit
def _flat_hvp(params, v):
    unravel = ravel_pytree(params)[1]
    return ravel_pytree(cc.hvp(MLP.loss, params, unravel(v), MLP.inputs, MLP.targets))[0]


def _dense(params, pre=None):
    """Dense (preconditioned) Hessian: ascending eigenvalues and eigenvectors (numpy eigh)."""
    hessian = np.asarray(_hessian(params))
    if pre is not None:
        d = 1.0 / np.sqrt(np.asarray(ravel_pytree(pre)[0]))
        hessian = d[:, None] * hessian * d[None, :]
    return np.linalg.eigh(hessian)


def _eigsh_top(params, k=1):
    """scipy's ARPACK (eigsh) driving the same JAX Hessian-vector product."""
    n = ravel_pytree(params)[0].size
    op = spla.LinearOperator(
        (n, n), matvec=lambda v: np.asarray(_flat_hvp(params, jnp.asarray(v))), dtype=np.float64
    )
    return np.sort(spla.eigsh(op, k=k, which="LA", tol=1e-10, v0=np.ones(n))[0])[::-1]


def _top_vector(result):
    return ravel_pytree(jax.tree.map(lambda v: v[0], result.eigenvectors))[0]


@pytest.fixture(scope="module")
def dense():
    return _dense(MLP.params)


def test_default_call_within_1e3_of_eigh_and_eigsh(dense):
    res = sharpness(MLP.params, jax.random.key(0), rtol=1e-3)
    top = dense.eigenvalues[-1]
    assert bool(res.converged) and res.eigenvalues.shape == (1,)
    np.testing.assert_allclose(res.eigenvalues[0], top, rtol=1e-3)
    np.testing.assert_allclose(res.eigenvalues[0], _eigsh_top(MLP.params)[0], rtol=1e-3)
    # The residual certificate: ||Hx - θx|| <= rtol |θ|.
    x = _top_vector(res)
    residual = np.linalg.norm(_flat_hvp(MLP.params, x) - res.eigenvalues[0] * x)
    assert residual <= 1e-3 * abs(res.eigenvalues[0])


def test_same_key_same_bits_other_key_same_value():
    a = sharpness(MLP.params, jax.random.key(3), rtol=1e-3)
    b = sharpness(MLP.params, jax.random.key(3), rtol=1e-3)
    c = sharpness(MLP.params, jax.random.key(4), rtol=1e-3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_top_vector(a), _top_vector(c))
    np.testing.assert_allclose(a.eigenvalues, c.eigenvalues, rtol=1e-3)


ONES = jax.tree.map(jnp.ones_like, MLP.params)


def test_top_k_tight_tolerance(dense):
    res = sharpness(MLP.params, jax.random.key(1), rtol=1e-9, num_iters=32, k=3, pre=ONES)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, dense.eigenvalues[::-1][:3], rtol=1e-6)
    np.testing.assert_allclose(res.eigenvalues, _eigsh_top(MLP.params, k=3), rtol=1e-6)
    assert abs(float(_top_vector(res) @ dense.eigenvectors[:, -1])) >= 1 - 1e-6


def test_power_method(dense):
    # Here λ_max = 3.15 > |λ_min| = 1.44, so the dominant eigenvalue is the top one.
    assert dense.eigenvalues[-1] > abs(dense.eigenvalues[0])
    res = sharpness(MLP.params, jax.random.key(0), rtol=1e-3, method="power")
    assert bool(res.converged) and int(res.num_iters) < 1000
    np.testing.assert_allclose(res.eigenvalues[0], dense.eigenvalues[-1], rtol=1e-3)


def test_warm_start_tracks_along_gradient_descent():
    first = sharpness(MLP.params, jax.random.key(1), rtol=1e-9, num_iters=32, k=3, pre=ONES)
    params, grad = MLP.params, jax.grad(MLP.loss)
    for _ in range(5):
        g = grad(params, MLP.inputs, MLP.targets)
        params = jax.tree.map(lambda w, g: w - 0.05 * g, params, g)
    previous = jax.tree.map(lambda v: v[0], first.eigenvectors)
    tracked = sharpness(params, None, rtol=0.0, v0=previous, num_iters=5)
    assert int(tracked.num_iters) == 5
    np.testing.assert_allclose(tracked.eigenvalues[0], _dense(params).eigenvalues[-1], rtol=1e-2)


def test_warm_start_accepts_stacked_eigenvectors():
    # A previous EigResult.eigenvectors (leading axis k) is summed into one start vector.
    diag = jnp.array([4.0, 3.0, 1.0, 0.5])
    f = lambda w: 0.5 * jnp.sum(diag * w["x"] ** 2)  # noqa: E731
    params = {"x": jnp.zeros(4)}
    stacked = {"x": jnp.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])}
    kw = dict(num_iters=1, rtol=0.0)  # one Lanczos product: the Rayleigh quotient of v0
    from_stack = cc.hessian_sharpness(f, params, v0=stacked, **kw)
    from_sum = cc.hessian_sharpness(f, params, v0={"x": jnp.array([1.0, 1.0, 0.0, 0.0])}, **kw)
    np.testing.assert_allclose(from_stack.eigenvalues, from_sum.eigenvalues, rtol=1e-14)
    np.testing.assert_allclose(from_stack.eigenvalues[0], 3.5, rtol=1e-14)  # (4 + 3) / 2


def test_preconditioned_matches_dense():
    rng = np.random.default_rng(0)
    pre = jax.tree.map(lambda w: jnp.asarray(rng.uniform(0.2, 3.0, w.shape)), MLP.params)
    reference = _dense(MLP.params, pre).eigenvalues[::-1]
    res = sharpness(MLP.params, jax.random.key(0), rtol=1e-9, num_iters=32, k=3, pre=pre)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, reference[:3], rtol=1e-6)
    # Not the plain sharpness: the preconditioner matters.
    assert abs(reference[0] - _dense(MLP.params).eigenvalues[-1]) > 0.1


def test_preconditioner_zero_entries_are_projected_out():
    # P = 1 on the first layer, 0 on the last: the operator is the first layer's Hessian block.
    pre = [{"w": jnp.ones((3, 5)), "b": jnp.ones(5)}, {"w": jnp.zeros((5, 2)), "b": jnp.zeros(2)}]
    hessian = np.asarray(_hessian(MLP.params))
    order = ravel_pytree(pre)[0]  # ravel order puts layer 0 (b then w) first: 20 ones
    assert np.all(np.asarray(order[:20]) == 1.0) and np.all(np.asarray(order[20:]) == 0.0)
    block = np.linalg.eigvalsh(hessian[:20, :20])
    res = sharpness(MLP.params, jax.random.key(0), rtol=1e-9, num_iters=32, k=3, pre=pre)
    assert np.all(np.isfinite(res.eigenvalues))
    np.testing.assert_allclose(res.eigenvalues, block[::-1][:3], rtol=1e-6)


def test_second_jitted_call_with_new_values_does_not_retrace():
    sharpness(MLP.params, jax.random.key(0), rtol=1e-3)  # same call signature as below
    count = len(TRACES)
    moved = jax.tree.map(lambda w: 1.1 * w, MLP.params)
    res = sharpness(moved, jax.random.key(5), rtol=1e-2)
    assert count >= 1 and len(TRACES) == count
    np.testing.assert_allclose(res.eigenvalues[0], _dense(moved).eigenvalues[-1], rtol=1e-2)


def test_trace_time_errors():
    f, args, key = MLP.loss, (MLP.inputs, MLP.targets), jax.random.key(0)
    ints = jax.tree.map(lambda w: w.astype(jnp.int32), MLP.params)
    with pytest.raises(TypeError, match="floating"):
        cc.hessian_sharpness(f, ints, *args, key=key)
    with pytest.raises(TypeError, match="key="):
        cc.hessian_sharpness(f, MLP.params, *args)
    with pytest.raises(ValueError, match="method"):
        cc.hessian_sharpness(f, MLP.params, *args, key=key, method="arnoldi")
    with pytest.raises(ValueError, match="k=2"):
        cc.hessian_sharpness(f, MLP.params, *args, key=key, method="power", k=2)
    with pytest.raises(ValueError, match="v0"):
        cc.hessian_sharpness(f, MLP.params, *args, v0=MLP.params[:1])
    with pytest.raises(ValueError, match="preconditioner"):
        cc.hessian_sharpness(f, MLP.params, *args, key=key, preconditioner={"w": 1.0})
    with pytest.raises(TypeError, match="scalar"):
        cc.hessian_sharpness(lambda p, x, y: MLP.predict(p, x), MLP.params, *args, key=key)


def _quadratic_sharpness(spectrum, method, seed=0):
    spd = testing.matrix_with_spectrum(spectrum, seed=seed)
    run = jax.jit(
        lambda w, a, key: cc.hessian_sharpness(
            lambda w, a: 0.5 * w @ (a @ w), w, a, key=key, method=method
        )
    )
    return run(jnp.zeros(len(spectrum)), jnp.asarray(spd.matrix), jax.random.key(seed))


def test_negative_dominant_eigenvalue_is_not_certified_as_sharpness():
    # Spectrum in [-10, 0] (λ_max = 0): power iteration converges to λ_min = -10. Before
    # the check it came back as the "sharpness" with converged=True.
    spectrum = np.concatenate([[0.0, -10.0], np.random.default_rng(0).uniform(-10, 0, 38)])
    power = _quadratic_sharpness(spectrum, "power")
    assert not bool(power.converged)
    assert -10.0 < float(power.eigenvalues[0]) <= 1e-12  # the check's better Ritz value
    lanczos = _quadratic_sharpness(spectrum, "lanczos")
    assert bool(lanczos.converged)
    assert abs(float(lanczos.eigenvalues[0])) <= 1e-3 * np.sqrt(np.finfo(np.float64).eps) * 10


def test_power_stalled_near_the_second_of_a_close_pair_is_caught():
    # An MLP Hessian whose top two eigenvalues are 0.99% apart. From these starts power
    # iteration's residual test passes near λ_2 (an eigenvalue, but not λ_max); the Lanczos
    # check from its vector finds λ_1, so hessian_sharpness returns it, uncertified.
    mlp = testing.mlp((6, 12, 3), num_examples=24, seed=302)
    flat, unravel = ravel_pytree(mlp.params)
    hessian = jax.hessian(lambda x: mlp.loss(unravel(x), mlp.inputs, mlp.targets))(flat)
    top = np.linalg.eigvalsh(np.asarray(hessian))[::-1][:2]
    assert 0.009 < top[0] / top[1] - 1 < 0.01

    def fun(params):
        return mlp.loss(params, mlp.inputs, mlp.targets)

    @jax.jit
    def both(params, key):
        start = _tree.normal_like(key, params)
        plain = cc.power_iteration(lambda v: cc.hvp(fun, params, v), start, rtol=1e-3)
        return plain, cc.hessian_sharpness(fun, params, key=key, method="power", rtol=1e-3)

    for key in (36, 39):
        plain, checked = both(mlp.params, jax.random.key(key))
        assert bool(plain.converged) and abs(float(plain.eigenvalues[0]) / top[1] - 1) < 1e-3
        np.testing.assert_allclose(checked.eigenvalues[0], top[0], rtol=1e-6)
        assert not bool(checked.converged)
        assert int(checked.num_iters) == int(plain.num_iters) + 8
