"""Krylov machinery over pytrees: stacked bases, the small tridiagonal problem, the stop test.

A *basis* is a pytree like a vector whose every leaf has an extra leading axis (one row per
basis vector). The helpers here read and write rows, take the inner products of a vector
with every row (the ``_tree.vdot`` reduction, batched, with no reshape of any leaf, so they
run unchanged on sharded leaves), project a basis out of a vector (classical Gram-Schmidt,
twice) and draw deterministic pseudo-random restart vectors. They also solve the small
problem of Lanczos (top Ritz pairs of a padded tridiagonal by Sturm bisection and inverse
iteration, with certified residual bounds) and schedule its stop test. They are private to
:mod:`cdat_core.eig` and the spectral tools built on it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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
    """Write ``x`` into row ``j`` (in place inside loops: a plain dynamic-update-slice)."""
    return jax.tree.map(
        lambda b, a: jax.lax.dynamic_update_index_in_dim(b, a.astype(b.dtype), j, 0), basis, x
    )


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


#: Rows per block of a basis: orthogonalization skips the blocks not yet filled.
BLOCK = 32


def padded_rows(rows: int) -> int:
    """The number of basis rows to allocate for ``rows`` vectors: a multiple of ``BLOCK``."""
    return -(-rows // BLOCK) * BLOCK


def orthogonalize(basis: PyTree, x: PyTree, dtype: np.dtype, rows: jax.Array) -> PyTree:
    """Project the span of the first ``rows`` rows of ``basis`` out of ``x``, twice.

    Block Gram-Schmidt: the first ``ceil(rows / BLOCK)`` blocks of ``BLOCK`` rows (the
    basis has a multiple of ``BLOCK`` rows, unused ones zero) are projected out one after
    the other, and the whole pass is repeated once ("twice is enough"). Only filled blocks
    are read, so step ``j`` of Lanczos costs :math:`O(j n)`, not :math:`O(m n)`. The loops
    have a traced trip count (a ``while`` under ``vmap``) and are emitted once.
    """
    count = (jnp.asarray(rows, jnp.int32) + BLOCK - 1) // BLOCK

    def project_block(i: jax.Array, x: PyTree) -> PyTree:
        block = jax.tree.map(
            lambda b: jax.lax.dynamic_slice_in_dim(b, i * BLOCK, BLOCK, axis=0), basis
        )
        return jax.tree.map(jnp.subtract, x, combine(dots(block, x, dtype), block))

    def one_pass(_: Any, x: PyTree) -> PyTree:
        return jax.lax.fori_loop(0, count, project_block, x)

    return jax.lax.fori_loop(0, 2, one_pass, x)


# --------------------------------------------------------------------------------------------
# The small problem: top Ritz pairs of the Lanczos tridiagonal.
# --------------------------------------------------------------------------------------------


class RitzPairs(NamedTuple):
    """Top-``k`` eigenpairs of the valid block of a padded tridiagonal, with residual bounds.

    Attributes:
      values: ``(k,)`` Ritz values, largest first; 0 past the valid size.
      vectors: ``(m, k)`` unit eigenvectors of the valid block (zero rows past it).
      residuals: ``(k,)`` bounds on ``||A Q y - θ Q y||`` for the Krylov basis ``Q``.
      scale: Gershgorin bound on ``||T||`` (at most ``||A||`` times a small factor).
    """

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array
    scale: jax.Array


def ritz_pairs(
    alphas: jax.Array, betas: jax.Array, dropped: jax.Array, size: jax.Array, k: int
) -> RitzPairs:
    r"""Top-``k`` Ritz pairs of ``T[:size, :size]``, in :math:`O(m)` work per pair.

    ``T`` has diagonal ``alphas`` and off-diagonal ``betas[:-1]`` (``betas[j]`` couples rows
    ``j`` and ``j + 1``; ``betas[size - 1]`` is the norm of the last Krylov residual). Rows at
    or past ``size`` are padding: they are decoupled and set below every valid eigenvalue, so
    a static-shape bisection (``jax.scipy.linalg.eigh_tridiagonal`` with ``select="i"``: Sturm
    counts, then inverse iteration with the vectors of close values orthogonalized) returns
    the valid top ``k``. No dense :math:`m \times m` eigenproblem is solved.

    The residual bound of a pair :math:`(\theta, y)`, for any unit :math:`y` (so also for
    the computed one), is the triangle inequality on
    :math:`A Q y - \theta Q y = Q (T - \theta) y + \beta_{\mathrm{last}} y_{\mathrm{last}}
    q_{\mathrm{next}} + \sum_{\mathrm{breakdowns}} \beta^{\mathrm{dropped}}_i (\dots)`:
    :math:`\|(T - \theta) y\| + |\beta_{\mathrm{last}} y_{\mathrm{last}}| +
    \sum_i |\beta^{\mathrm{dropped}}_i y_i|`, plus a rounding floor :math:`\epsilon\|T\|`.
    """
    m = alphas.shape[0]
    dtype = alphas.dtype
    idx = jnp.arange(m, dtype=jnp.int32)
    valid = idx < size
    a = jnp.where(valid, alphas, 0.0)
    b = jnp.where(idx < size - 1, betas, 0.0)  # b[j] couples j, j + 1 inside the valid block
    b_prev = jnp.concatenate([jnp.zeros((1,), dtype), b[:-1]])
    scale = jnp.max(jnp.abs(a) + jnp.abs(b) + jnp.abs(b_prev))
    # Padding: a decoupled block below every valid eigenvalue (Gershgorin), so it sorts last.
    diag = jnp.where(valid, a, -2.0 * scale - 1.0)
    vectors = _top_eigh_tridiagonal(diag, b, scale, k)[1]
    # Inverse iteration has nothing to iterate on a zero block (NaN vectors): any unit
    # vector is then an eigenvector, and the residual below is computed for whatever is kept.
    finite = jnp.all(jnp.isfinite(vectors), axis=0)
    vectors = jnp.where(finite[None, :], vectors, jnp.eye(m, k, dtype=dtype))
    y = jnp.where(valid[:, None], vectors, 0.0)
    norms = jnp.sqrt(jnp.sum(y * y, axis=0))
    ok = (norms > 0) & (jnp.arange(k, dtype=jnp.int32) < size)
    y = jnp.where(ok[None, :], y / jnp.where(ok, norms, 1.0)[None, :], 0.0)
    y_next = jnp.concatenate([y[1:], jnp.zeros((1, k), dtype)])
    y_prev = jnp.concatenate([jnp.zeros((1, k), dtype), y[:-1]])
    t_y = a[:, None] * y + b[:, None] * y_next + b_prev[:, None] * y_prev
    # The Rayleigh quotient of the computed vector: as accurate as the bisection value (its
    # error is quadratic in the vector's), exact on exact eigenvectors (0 on a zero block),
    # and the value that minimizes the defect ||(T - θ) y|| of that vector.
    theta = jnp.where(ok, jnp.sum(y * t_y, axis=0), 0.0)
    # ||(T - θ) y|| on the valid block, then the couplings to vectors outside it.
    defect = jnp.sqrt(jnp.sum((t_y - theta[None, :] * y) ** 2, axis=0))
    last = jax.lax.dynamic_index_in_dim(y, jnp.maximum(size - 1, 0), keepdims=False)
    coupling = jax.lax.dynamic_index_in_dim(betas, jnp.maximum(size - 1, 0), 0, False)
    outside = jnp.abs(coupling * last) + jnp.sum(jnp.abs(dropped[:, None] * y), axis=0)
    residuals = defect + outside + jnp.finfo(dtype).eps * scale
    return RitzPairs(theta, y, residuals, scale)


def _sturm_count(diag: jax.Array, off_sq: jax.Array, pivmin: jax.Array, x: jax.Array) -> jax.Array:
    """Number of eigenvalues of the tridiagonal below each entry of ``x`` (Sturm sequence).

    The ratio recurrence ``q_i = d_i - x - e_{i-1}^2 / q_{i-1}`` of LAPACK's ``dstebz``, with
    pivots kept at least ``pivmin`` away from 0; the count is the number of negative pivots.
    """

    def step(i: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        q, count = carry
        q = diag[i] - x - off_sq[i - 1] / q
        negative = q <= pivmin
        return jnp.where(negative, jnp.minimum(q, -pivmin), q), count + negative.astype(jnp.int32)

    q = diag[0] - x
    count = (q < 0).astype(jnp.int32)
    q = jnp.where(jnp.abs(q) < pivmin, -pivmin, q)
    return jax.lax.fori_loop(1, diag.shape[0], step, (q, count))[1]


def _top_eigh_tridiagonal(
    diag: jax.Array, off: jax.Array, scale: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    r"""The ``k`` largest eigenpairs of a symmetric tridiagonal (``off[i]`` couples ``i, i+1``).

    Eigenvalues by bisection on Sturm counts, all ``k`` at once, to :math:`\epsilon\|T\|`
    (``scale`` bounds :math:`\|T\|`); eigenvectors by three steps of inverse iteration
    (``tridiagonal_solve``, perturbed if singular), the ``k`` vectors orthonormalized (QR)
    after each step so that those of close eigenvalues span their invariant subspace. A
    vector that comes out non-finite (a zero matrix) is replaced by a unit vector.
    """
    m = diag.shape[0]
    dtype = diag.dtype
    finfo = jnp.finfo(dtype)
    off_sq = off * off
    pivmin = finfo.tiny * jnp.maximum(1.0, jnp.max(off_sq))
    span = 2.0 * scale + 1.0  # every eigenvalue, padding included, lies in [-span, span]
    target = (m - 1 - jnp.arange(k, dtype=jnp.int32)).astype(jnp.int32)  # ascending index

    def bisect(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lower, upper = bounds
        mid = 0.5 * (lower + upper)
        below = _sturm_count(diag, off_sq, pivmin, mid) <= target
        return jnp.where(below, mid, lower), jnp.where(below, upper, mid)

    start = (-span * jnp.ones((k,), dtype), span * jnp.ones((k,), dtype))
    lower, upper = jax.lax.fori_loop(0, finfo.nmant + 3, bisect, start)
    values = 0.5 * (lower + upper)
    if m == 1:
        return values, jnp.ones((1, 1), dtype)
    dl = jnp.broadcast_to(jnp.concatenate([jnp.zeros((1,), dtype), off[:-1]]), (k, m))
    du = jnp.broadcast_to(jnp.concatenate([off[:-1], jnp.zeros((1,), dtype)]), (k, m))
    shifted = diag[None, :] - values[:, None]

    def inverse_step(_: int, x: jax.Array) -> jax.Array:
        y = jax.lax.linalg.tridiagonal_solve(
            dl, shifted, du, x.T[:, :, None], perturb_singular=True
        )
        y = y[:, :, 0].T
        y = jnp.where(jnp.isfinite(y), y, 0.0)
        return jnp.linalg.qr(y)[0]

    phase = jnp.arange(m, dtype=dtype)[:, None] * (1.0 + jnp.arange(k, dtype=dtype))[None, :]
    x0 = jnp.linalg.qr(jnp.cos(0.618 * phase + 0.3))[0]  # deterministic, full rank
    vectors = jax.lax.fori_loop(0, 3, inverse_step, x0)
    return values, vectors


# --------------------------------------------------------------------------------------------
# The stop test: tolerance and when to run it.
# --------------------------------------------------------------------------------------------


def tolerance(theta: jax.Array, scale: jax.Array, rtol: jax.Array) -> jax.Array:
    r""":math:`\tau(\theta) = \mathrm{rtol}\max(|\theta|, \sqrt{\epsilon}\,\mathrm{scale})`."""
    floor = jnp.sqrt(jnp.finfo(theta.dtype).eps) * scale
    return rtol * jnp.maximum(jnp.abs(theta), floor)


def worst_ratio(pairs: RitzPairs, rtol: jax.Array, exact: bool) -> jax.Array:
    r"""``max_i r_i / tol_i`` over the top-``k`` Ritz pairs (``<= 1``: the stop test passes).

    ``tol_i`` is :math:`\tau(\theta_i)`, or, when ``exact`` (the whole space is within
    reach), :math:`\min(\tau(\theta_i), 64\,\epsilon\|T\|)`: then only a rounding-level
    residual stops the run early, as after a breakdown on an invariant subspace.
    """
    tol = tolerance(pairs.values, pairs.scale, rtol)
    if exact:
        tol = jnp.minimum(tol, 64.0 * jnp.finfo(tol.dtype).eps * pairs.scale)
    ratio = jnp.where(tol > 0, pairs.residuals / jnp.where(tol > 0, tol, 1.0), jnp.inf)
    ratio = jnp.where(pairs.residuals <= tol, jnp.minimum(ratio, 1.0), ratio)
    return jnp.max(ratio)


def next_check(
    count: jax.Array, ratio: jax.Array, last_check: jax.Array, last_ratio: jax.Array
) -> jax.Array:
    r"""The product count of the next stop test after a failed one (``ratio > 1``).

    Residuals of Krylov methods fall roughly geometrically: from the last two tests, predict
    the steps ``s`` left and test again after ``s / 2`` of them (every step at first and when
    close), at most ``count / 4`` later, so the tests cost :math:`O(\log m)` small
    tridiagonal solves instead of one per step, for at most ~25% extra products.
    """
    cap = jnp.maximum(count // 4, 1)
    gain = jnp.log(last_ratio) - jnp.log(ratio)
    ok = jnp.isfinite(gain) & (gain > 0) & jnp.isfinite(ratio)
    rate = jnp.where(ok, gain, 1.0) / jnp.maximum(count - last_check, 1).astype(gain.dtype)
    steps = jnp.where(ok, jnp.log(jnp.where(ok, ratio, 2.0)) / rate, jnp.inf)
    step = jnp.clip(jnp.floor(steps / 2.0), 1, cap.astype(steps.dtype)).astype(jnp.int32)
    return count + jnp.where(count < 8, 1, step)
