"""block_sharpness: the top eigenvalues of a principal sub-Hessian, against dense eigh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import cdat_core as cc
from cdat_core import testing
from cdat_core.spectrum_blocks import _selection

MLP = testing.mlp((3, 5, 2), num_examples=16, seed=1)
ARGS = (MLP.inputs, MLP.targets)


def _dense_hessian(params):
    flat, unravel = ravel_pytree(params)
    f = lambda x: MLP.loss(unravel(x), *ARGS)  # noqa: E731
    return np.asarray(jax.jit(jax.hessian(f))(flat))


def _indices(params, selected):
    """Positions in ravel_pytree(params) of the leaves for which ``selected(path)`` holds."""
    marks = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full(x.shape, float(selected(jax.tree_util.keystr(path)))), params
    )
    return np.flatnonzero(np.asarray(ravel_pytree(marks)[0]))


TRACES = []


@jax.jit
def _layer0(params, key, pre):
    TRACES.append(1)
    # A prefix mask: True for the whole first layer.
    return cc.block_sharpness(
        MLP.loss,
        params,
        *ARGS,
        mask=[True, False],
        key=key,
        k=3,
        rtol=1e-10,
        num_iters=40,
        preconditioner=pre,
    )


def test_first_layer_equals_eigh_of_its_sub_hessian():
    ones = jax.tree.map(jnp.ones_like, MLP.params)
    res = _layer0(MLP.params, jax.random.key(0), ones)
    hess = _dense_hessian(MLP.params)
    idx = _indices(MLP.params, lambda path: path.startswith("[0]"))
    assert len(idx) == 3 * 5 + 5
    values, vectors = np.linalg.eigh(hess[np.ix_(idx, idx)])
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, values[::-1][:3], rtol=1e-8)
    # Not the full Hessian's (so this could fail), and below it (interlacing).
    top = np.linalg.eigvalsh(hess)[-1]
    assert res.eigenvalues[0] < top - 1e-3
    # Eigenvectors: like params, zero outside the block, ± the dense one inside.
    flat = np.asarray(ravel_pytree(jax.tree.map(lambda x: x[0], res.eigenvectors))[0])
    outside = np.setdiff1d(np.arange(flat.size), idx)
    assert np.all(flat[outside] == 0.0)
    np.testing.assert_allclose(abs(flat[idx] @ vectors[:, -1]), 1.0, rtol=1e-8)
    # Preconditioned: P = 4 on the block scales the sub-Hessian by 1/4.
    quarter = _layer0(MLP.params, jax.random.key(0), jax.tree.map(lambda x: 4.0 * x, ones))
    np.testing.assert_allclose(quarter.eigenvalues, values[::-1][:3] / 4, rtol=1e-8)


def test_compiles_once():
    ones = jax.tree.map(jnp.ones_like, MLP.params)
    _layer0(MLP.params, jax.random.key(0), ones)
    count = len(TRACES)
    moved = jax.tree.map(lambda w: 0.5 * w, MLP.params)
    res = _layer0(moved, jax.random.key(3), jax.tree.map(lambda x: 2.0 * x, ones))
    assert count >= 1 and len(TRACES) == count and bool(res.converged)


def test_callable_and_prefix_masks_select_leaves_like_a_full_mask():
    # Selection happens at trace time, before any product: compare it without running.
    full = [{"w": True, "b": False}, {"w": True, "b": False}]
    weights = _selection(lambda p: jax.tree.map(lambda x: x.ndim == 2, p), MLP.params)
    assert weights == _selection(full, MLP.params)
    assert sum(weights) == 2
    assert _selection([True, False], MLP.params) == _selection(
        [{"w": True, "b": True}, {"w": False, "b": False}], MLP.params
    )
    # None subtrees of params stay empty; a mask leaf over one selects nothing there.
    assert _selection({"a": True, "n": True}, {"a": jnp.ones(2), "n": None}) == [True]


# H = [[-1, 0, 0.5], [0, -3, 0], [0.5, 0, 10]] over (a0, a1, b).
H3 = jnp.array([[-1.0, 0.0, 0.5], [0.0, -3.0, 0.0], [0.5, 0.0, 10.0]])


def _f3(w):
    x = jnp.concatenate([w["a"], w["b"][None]])
    return 0.5 * x @ (H3 @ x)


@jax.jit
def _block_a(params, v0):
    return cc.block_sharpness(_f3, params, mask={"a": True, "b": False}, v0=v0, num_iters=2)


def test_negative_definite_block_is_not_hidden_by_the_other_coordinates():
    # The block {a} has λmax = -1, which a projection onto the block inside the full space
    # would report as 0 (the eigenvalue of the other coordinates). Warm start like params
    # (a stacked previous result): only its entries in the block are used.
    params = {"a": jnp.zeros(2), "b": jnp.zeros(())}
    v0 = {"a": jnp.array([[1.0, 1.0]]), "b": jnp.array([5.0])}
    res = _block_a(params, v0)
    np.testing.assert_allclose(res.eigenvalues[0], -1.0, rtol=1e-10)
    assert bool(res.converged) and int(res.num_iters) <= 2
    assert float(res.eigenvectors["b"][0]) == 0.0
    np.testing.assert_allclose(jnp.abs(res.eigenvectors["a"][0]), [1.0, 0.0], atol=1e-10)


def test_bad_masks_are_named():
    f, key = MLP.loss, jax.random.key(0)
    with pytest.raises(ValueError, match="mask selects no parameters"):
        cc.block_sharpness(f, MLP.params, *ARGS, mask=[False, False], key=key)
    with pytest.raises(ValueError, match="mask must be a pytree"):
        cc.block_sharpness(f, MLP.params, *ARGS, mask=[True, False, True], key=key)
    with pytest.raises(TypeError, match=r"mask\[0\]\['w'\] must be a Python bool"):
        mask = [{"w": jnp.ones((3, 5), bool), "b": True}, False]
        cc.block_sharpness(f, MLP.params, *ARGS, mask=mask, key=key)
    with pytest.raises(TypeError, match="key="):
        cc.block_sharpness(f, MLP.params, *ARGS, mask=[True, False])
    with pytest.raises(ValueError, match="v0"):
        cc.block_sharpness(f, MLP.params, *ARGS, mask=[True, False], v0=MLP.params[0])
