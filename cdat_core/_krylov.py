"""Krylov bases over pytrees: stacked vectors, batched inner products, restart vectors.

A *basis* is a pytree like a vector whose every leaf has an extra leading axis (one row per
basis vector). The helpers here read and write rows, take the inner products of a vector
with every row (the ``_tree.vdot`` reduction, batched, with no reshape of any leaf, so they
run unchanged on sharded leaves), project a basis out of a vector (classical Gram-Schmidt,
twice) and draw deterministic pseudo-random restart vectors. They are private to
:mod:`cdat_core.eig` and the spectral tools built on it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cdat_core import _tree

PyTree = Any

#: Seed of the deterministic restart vectors Lanczos draws after a breakdown.
RESTART_SEED = 0x2407_0618


def normalize(x: PyTree) -> tuple[PyTree, jax.Array]:
    """``(x / ||x||, ||x||)``; a zero (or non-finite) ``x`` gives ``(0, 0)``, never NaN."""
    nx = _tree.norm(x)
    ok = (nx > 0) & jnp.isfinite(nx)
    inv = jnp.where(ok, 1.0 / jnp.where(ok, nx, 1.0), 0.0)
    return _tree.scale(inv, x), jnp.where(ok, nx, 0.0)


def _mix32(x: jax.Array) -> jax.Array:
    """A bijective avalanche hash of uint32 (Wellons' ``lowbias32``)."""
    x = x ^ (x >> jnp.uint32(16))
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> jnp.uint32(15))
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> jnp.uint32(16))


def hash_like(template: PyTree, step: jax.Array) -> PyTree:
    """Deterministic pseudo-random entries in [-1, 1), a hash of (global position, step).

    Used for Lanczos restarts: unlike ``jax.random`` it costs nothing to compile inside a
    loop, and, built from ``broadcasted_iota`` with the template's sharding and elementwise
    integer ops, it gives the same bits however the leaves are sharded. ``template`` must be
    traced (it sets the shapes, dtypes and shardings).
    """
    salt = _mix32(jnp.asarray(step).astype(jnp.uint32) ^ jnp.uint32(RESTART_SEED))
    out, offset = [], 0
    leaves, treedef = jax.tree.flatten(template)
    for leaf in leaves:
        shape, sharding = leaf.shape, _tree.explicit_sharding(leaf)
        index = jnp.full((), offset % 2**32, jnp.uint32)
        stride = 1
        for d in reversed(range(len(shape))):
            iota = jax.lax.broadcasted_iota(jnp.uint32, shape, d, out_sharding=sharding)
            index = index + iota * jnp.uint32(stride % 2**32)
            stride *= shape[d]
        bits = _mix32(_mix32(index) ^ salt)
        unit = (bits >> jnp.uint32(8)).astype(leaf.dtype) * (2.0**-23) - 1.0
        out.append(jnp.broadcast_to(unit, shape).astype(leaf.dtype))
        offset += stride
    return jax.tree.unflatten(treedef, out)


def row(basis: PyTree, j: jax.Array) -> PyTree:
    return jax.tree.map(lambda b: jax.lax.dynamic_index_in_dim(b, j, keepdims=False), basis)


def set_row(basis: PyTree, j: jax.Array | int, x: PyTree) -> PyTree:
    return jax.tree.map(lambda b, a: b.at[j].set(a.astype(b.dtype)), basis, x)


def dots(basis: PyTree, x: PyTree, dtype: np.dtype) -> jax.Array:
    """Inner products of ``x`` with every row of ``basis``: shape ``(rows,)``.

    Per leaf ``jnp.sum(b * x)`` over the non-leading axes, summed over leaves: the
    ``_tree.vdot`` reduction, batched over the basis, with no reshape of any leaf.
    """
    terms = jax.tree.leaves(
        jax.tree.map(
            lambda b, a: jnp.sum(b * a.astype(b.dtype)[None], axis=tuple(range(1, b.ndim))),
            basis,
            x,
        )
    )
    return sum((t.astype(dtype) for t in terms[1:]), terms[0].astype(dtype))


def combine(coefficients: jax.Array, basis: PyTree) -> PyTree:
    """``sum_i coefficients[..., i] * basis[i]`` leafwise (contraction over the basis axis)."""
    return jax.tree.map(lambda b: jnp.tensordot(coefficients.astype(b.dtype), b, axes=1), basis)


def orthogonalize(basis: PyTree, x: PyTree, dtype: np.dtype) -> PyTree:
    """Project the span of ``basis`` out of ``x``: classical Gram-Schmidt, twice.

    The two passes are a ``fori_loop`` so their code is emitted (and compiled) once.
    """

    def project_out(_: Any, x: PyTree) -> PyTree:
        return jax.tree.map(jnp.subtract, x, combine(dots(basis, x, dtype), basis))

    return jax.lax.fori_loop(0, 2, project_out, x)
