"""update_alignment: |<u, v_max>|/||u|| and the cosine of successive updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cdat_core as cc
from cdat_core import testing

TRACES = []


@jax.jit
def _align(update, eigenvector, previous, pre):
    TRACES.append(1)
    return cc.update_alignment(update, eigenvector, previous_update=previous, preconditioner=pre)


def _tree(x):
    x = jnp.asarray(x)
    return {"a": x[:2], "b": {"c": x[2:].reshape(2, 2), "d": None}}


ONES = _tree(np.ones(6))


def test_update_along_the_top_eigenvector_is_aligned_and_opposite_updates_have_cosine_minus_1():
    spd = testing.matrix_with_spectrum([5.0, 3.0, 2.0, 1.0, 0.5, 0.1], seed=0)
    top = spd.eigenvectors[:, 0]
    # A step down the top direction, then the step back: the edge-of-stability zigzag.
    out = _align(_tree(-0.3 * top), _tree(top), _tree(0.3 * top), ONES)
    np.testing.assert_allclose(float(out.alignment), 1.0, rtol=1e-14)
    np.testing.assert_allclose(float(out.cosine), -1.0, rtol=1e-14)
    # Along the second eigenvector: orthogonal to the top one; same direction twice: +1.
    second = spd.eigenvectors[:, 1]
    out = _align(_tree(second), _tree(top), _tree(2.0 * second), ONES)
    assert abs(float(out.alignment)) < 1e-14
    np.testing.assert_allclose(float(out.cosine), 1.0, rtol=1e-14)
    # A 3-4-5 mix, with the eigenvectors given as a stack (an EigResult's, top first).
    stack = jax.tree.map(lambda a, b: jnp.stack([a, b]), _tree(top), _tree(second))
    out = cc.update_alignment(_tree(3.0 * top + 4.0 * second), stack)
    np.testing.assert_allclose(float(out.alignment), 0.6, rtol=1e-13)
    assert float(out.cosine) == 0.0  # no previous update


def test_preconditioned_alignment_uses_the_whitened_update():
    spd = testing.matrix_with_spectrum([4.0, 2.0, 1.0, 1.0, 0.5, 0.2], seed=1)
    p = np.linspace(0.5, 3.0, 6)
    whitened = spd.matrix / np.sqrt(p)[:, None] / np.sqrt(p)[None, :]
    x = np.linalg.eigh(whitened)[1][:, -1]  # top eigenvector of P^-1/2 H P^-1/2
    # The update whose whitened image P^1/2 u is x: aligned; x itself in parameter space: not.
    out = _align(_tree(x / np.sqrt(p)), _tree(x), _tree(x), _tree(p))
    np.testing.assert_allclose(float(out.alignment), 1.0, rtol=1e-13)
    plain = _align(_tree(x), _tree(x), _tree(x), _tree(p))
    assert float(plain.alignment) < 0.99
    np.testing.assert_allclose(float(plain.cosine), 1.0, rtol=1e-14)


def test_degenerate_updates_give_zero_not_nan():
    v = _tree(np.arange(1.0, 7.0))
    zero = _align(_tree(np.zeros(6)), v, v, ONES)
    assert float(zero.alignment) == 0.0 and float(zero.cosine) == 0.0
    bad = _align(_tree(np.full(6, np.nan)), v, v, ONES)
    assert float(bad.alignment) == 0.0 and float(bad.cosine) == 0.0
    # A non-positive preconditioner entry drops that entry, as in hessian_sharpness.
    pre = _tree(np.array([0.0, 1, 1, 1, 1, 1]))
    only_first = _align(_tree(np.eye(6)[0]), v, v, pre)
    assert float(only_first.alignment) == 0.0 and np.isfinite(float(only_first.cosine))


def test_compiles_once():
    rng = np.random.default_rng(0)
    _align(ONES, ONES, ONES, ONES)
    count = len(TRACES)
    outs = [_align(*(_tree(rng.standard_normal(6)) for _ in range(3)), ONES) for _ in range(3)]
    assert count >= 1 and len(TRACES) == count
    assert len({float(o.alignment) for o in outs}) == 3


FLOATS = st.lists(testing.floats(-10.0, 10.0), min_size=6, max_size=6)


@given(FLOATS, FLOATS, testing.floats(0.1, 10.0), st.booleans())
def test_invariants(u, x, scale, flip):
    u, x = np.asarray(u), np.asarray(x)
    sign = -1.0 if flip else 1.0
    out = _align(_tree(u), _tree(x), _tree(sign * scale * u), ONES)
    scaled = _align(_tree(sign * scale * u), _tree(scale * x), _tree(u), ONES)
    a, c = float(out.alignment), float(out.cosine)
    assert 0.0 <= a <= 1.0 and -1.0 <= c <= 1.0
    if np.linalg.norm(u) > 1e-6 and np.linalg.norm(x) > 1e-6:
        # Scale-free in u and x, even in the sign of u; u against ±αu has cosine ±1.
        np.testing.assert_allclose(float(scaled.alignment), a, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c, sign, rtol=1e-12)
        np.testing.assert_allclose(float(scaled.cosine), c, rtol=1e-12)
        # Cauchy-Schwarz, recomputed in NumPy.
        expect = abs(u @ x) / (np.linalg.norm(u) * np.linalg.norm(x))
        np.testing.assert_allclose(a, expect, rtol=1e-9, atol=1e-12)
    if not np.any(u):
        assert a == 0.0 and c == 0.0


def test_bad_arguments_are_named():
    u = _tree(np.ones(6))
    with pytest.raises(ValueError, match="eigenvector"):
        cc.update_alignment(u, jnp.ones(6))
    with pytest.raises(ValueError, match="previous_update"):
        cc.update_alignment(u, u, previous_update={"a": jnp.ones(2)})
    with pytest.raises(ValueError, match="preconditioner"):
        cc.update_alignment(u, u, preconditioner=jnp.ones(6))
    with pytest.raises(TypeError, match="floating"):
        cc.update_alignment(jnp.ones(3, jnp.int32), jnp.ones(3))
