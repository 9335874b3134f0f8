"""hvp: dense Hessian, symmetry, structure and dtype of the output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import cdat_core as cc
from cdat_core import testing


def _random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), tree)


@pytest.mark.parametrize("seed", range(3))
def test_against_dense_hessian(seed):
    m = testing.mlp((3, 5, 2), seed=seed)
    v = _random_like(m.params, seed + 3)
    flat_w, unravel = ravel_pytree(m.params)
    flat_v, _ = ravel_pytree(v)
    hessian = jax.hessian(lambda x: m.loss(unravel(x), m.inputs, m.targets))(flat_w)

    out = cc.hvp(m.loss, m.params, v, m.inputs, m.targets)

    assert jax.tree.structure(out) == jax.tree.structure(m.params)
    np.testing.assert_allclose(ravel_pytree(out)[0], hessian @ flat_v, rtol=1e-10, atol=1e-12)


def test_quadratic_gives_matrix_times_vector():
    spd = testing.matrix_with_spectrum([4.0, 2.0, 1.0, 0.5, 0.1], seed=3)
    q = testing.quadratic(spd, seed=3)
    v = _random_like(q.params, 5)
    out = cc.hvp(q.fun, q.params, v)
    np.testing.assert_allclose(q.flatten(out), spd.matrix @ q.flatten(v), rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_symmetric(seed):
    m = testing.mlp((4, 3, 3), seed=seed)
    u, v = _random_like(m.params, seed + 1), _random_like(m.params, seed + 2)
    hu = cc.hvp(m.loss, m.params, u, m.inputs, m.targets)
    hv = cc.hvp(m.loss, m.params, v, m.inputs, m.targets)
    from cdat_core import _tree

    np.testing.assert_allclose(_tree.vdot(v, hu), _tree.vdot(u, hv), rtol=1e-10)


def test_consistent_with_directional_curvature():
    m = testing.mlp((3, 4, 2), seed=9)
    u = _random_like(m.params, 10)
    from cdat_core import _tree

    hu = cc.hvp(m.loss, m.params, u, m.inputs, m.targets)
    curv = cc.directional_curvature(m.loss, m.params, u, m.inputs, m.targets).curvature
    np.testing.assert_allclose(_tree.vdot(u, hu), curv, rtol=1e-10)
