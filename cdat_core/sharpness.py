r"""Sharpness: top eigenvalues of symmetric operators and of the (preconditioned) Hessian.

Notation (Roulet et al., 2024, "Stepping on the Edge", appendices B.1 and C.4): :math:`A` a
symmetric linear operator on a pytree space of dimension :math:`n` (the total number of
entries of the leaves), given only through ``matvec(v)`` :math:`= Av`; its eigenvalues
:math:`\lambda_1 \ge \dots \ge \lambda_n`; :math:`H = \nabla^2 f(w)` the Hessian of the
objective, whose top eigenvalue :math:`\lambda_{\max}(H)` is the *sharpness*.

Both solvers return an :class:`EigResult` with the same shapes, for ``k`` requested pairs
(``k = 1`` for :func:`power_iteration`):

- ``eigenvalues``: shape ``(k,)``, largest (algebraic) first, in the accumulation dtype of the
  vector's leaves (at least float32), so ``result.eigenvalues[0]`` is the top one;
- ``eigenvectors``: a pytree like the start vector whose every leaf has a leading axis of
  size ``k``, unit norm (zero only when nothing finite was computed), in the start vector's
  dtypes and shardings; ``jax.tree.map(lambda x: x[i], ...)``
  is the vector of ``eigenvalues[i]``, and ``v0=result.eigenvectors`` warm-starts the next
  call of :func:`hessian_sharpness`;
- ``num_iters``: the number of ``matvec`` calls actually made (int32 scalar);
- ``converged``: whether every returned eigenvalue :math:`\theta` has a residual
  :math:`\|Ax - \theta x\| \le \mathrm{rtol}\,|\theta|`, which for symmetric :math:`A`
  certifies that *some* eigenvalue of :math:`A` lies within :math:`\mathrm{rtol}\,|\theta|` of
  :math:`\theta`. A zero :math:`\theta` is never reported as converged (relative accuracy is
  undefined there), and the residual is taken with a rounding floor of
  :math:`\epsilon\|A\|` (:math:`\epsilon` the machine epsilon), so a value at rounding level
  is not certified either.

Loops are ``lax.while_loop`` with a static bound (``num_iters``), so each entry point compiles
once per structure; ``rtol`` and all operator data are traced. No result is ever NaN: a zero
start vector, a zero or rank-deficient operator, an exact eigenvector as start, or a
``matvec`` that returns non-finite values all give finite outputs (see each function).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core import _tree
from cdat_core.curvature import hvp

__all__ = [
    "EigResult",
    "hessian_sharpness",
    "lanczos",
    "power_iteration",
    "preconditioner_from_optax_state",
]

PyTree = Any
Matvec = Callable[[PyTree], PyTree]

#: Seed of the deterministic restart vectors Lanczos draws after a breakdown.
_RESTART_SEED = 0x2407_0618


class EigResult(NamedTuple):
    """Top eigenpairs of a symmetric operator, with diagnostics (shapes in the module doc).

    Attributes:
      eigenvalues: shape ``(k,)``, largest (algebraic) first.
      eigenvectors: pytree like the start vector, each leaf with a leading axis of size ``k``.
      num_iters: number of matrix-vector products made.
      converged: whether every returned pair meets the relative residual test.
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    num_iters: jax.Array
    converged: jax.Array


# --------------------------------------------------------------------------------------------
# Private helpers: input checks, stacked Krylov bases, random vectors.
# --------------------------------------------------------------------------------------------


def _check_start(v0: PyTree, name: str = "v0") -> int:
    """Check ``v0`` is a non-empty pytree of floats; return its dimension ``n``."""
    _tree.check_float_tree(v0, name)
    n = sum(math.prod(np.shape(x)) for x in jax.tree.leaves(v0))
    if n == 0:
        raise ValueError(f"{name} has no entries; give a pytree with at least one float.")
    return n


def _scalar_dtype(tree: PyTree) -> np.dtype:
    return _tree.accumulation_dtype(*(jnp.result_type(x) for x in jax.tree.leaves(tree)))


def _apply(matvec: Matvec, v: PyTree, like: PyTree) -> PyTree:
    """``matvec(v)``, checked against ``like`` at trace time and cast to its dtypes."""
    out = matvec(_tree.cast_like(v, like))
    _tree.check_same_structure(like, out, "v0", "matvec(v)")
    _tree.check_float_tree(out, "matvec(v)")
    return out


def _normalize(x: PyTree) -> tuple[PyTree, jax.Array]:
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


def _hash_like(template: PyTree, step: jax.Array) -> PyTree:
    """Deterministic pseudo-random entries in [-1, 1), a hash of (global position, step).

    Used for Lanczos restarts: unlike ``jax.random`` it costs nothing to compile inside a
    loop, and, built from ``broadcasted_iota`` with the template's sharding and elementwise
    integer ops, it gives the same bits however the leaves are sharded. ``template`` must be
    traced (it sets the shapes, dtypes and shardings).
    """
    salt = _mix32(jnp.asarray(step).astype(jnp.uint32) ^ jnp.uint32(_RESTART_SEED))
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


def _row(basis: PyTree, j: jax.Array) -> PyTree:
    return jax.tree.map(lambda b: jax.lax.dynamic_index_in_dim(b, j, keepdims=False), basis)


def _set_row(basis: PyTree, j: jax.Array | int, x: PyTree) -> PyTree:
    return jax.tree.map(lambda b, a: b.at[j].set(a.astype(b.dtype)), basis, x)


def _dots(basis: PyTree, x: PyTree, dtype: np.dtype) -> jax.Array:
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


def _combine(coefficients: jax.Array, basis: PyTree) -> PyTree:
    """``sum_i coefficients[..., i] * basis[i]`` leafwise (contraction over the basis axis)."""
    return jax.tree.map(lambda b: jnp.tensordot(coefficients.astype(b.dtype), b, axes=1), basis)


def _orthogonalize(basis: PyTree, x: PyTree, dtype: np.dtype) -> PyTree:
    """Project the span of ``basis`` out of ``x``: classical Gram-Schmidt, twice.

    The two passes are a ``fori_loop`` so their code is emitted (and compiled) once.
    """

    def project_out(_: Any, x: PyTree) -> PyTree:
        return jax.tree.map(jnp.subtract, x, _combine(_dots(basis, x, dtype), basis))

    return jax.lax.fori_loop(0, 2, project_out, x)


# --------------------------------------------------------------------------------------------
# Power iteration
# --------------------------------------------------------------------------------------------


class _PowerState(NamedTuple):
    step: jax.Array
    vector: PyTree  # the next vector to multiply
    eigvec: PyTree  # the vector ``value`` is the Rayleigh quotient of
    value: jax.Array
    done: jax.Array
    converged: jax.Array


def power_iteration(
    matvec: Matvec, v0: PyTree, *, num_iters: int = 1000, rtol: Any = 1e-3
) -> EigResult:
    r"""Dominant eigenvalue of a symmetric operator by power iteration (appendix C.4).

    Iterates :math:`v_{t+1} = A v_t / \|A v_t\|` from :math:`v_0` and reports the Rayleigh
    quotient :math:`\mu_t = v_t^\top A v_t` (:math:`\|v_t\| = 1`). It stops after the first
    :math:`t` with residual :math:`r_t = \|A v_t - \mu_t v_t\|` satisfying
    :math:`r_t + \epsilon \|A v_t\| \le \mathrm{rtol}\,|\mu_t|` (:math:`\epsilon` the machine
    epsilon, a rounding floor; ``converged=True``; then an eigenvalue of :math:`A` lies within
    :math:`\mathrm{rtol}\,|\mu_t|` of :math:`\mu_t`), or after ``num_iters`` products. The
    paper runs up to 1000 iterations with a :math:`10^{-3}` relative accuracy stop (Roulet et
    al., 2024, appendix C.4); the residual test used here is the stricter, certified form of
    that stop.

    What it reports in the cases power iteration cannot resolve:

    - It converges to the eigenvalue of largest *magnitude*, with its sign. That is
      :math:`\lambda_{\max}` when :math:`\lambda_{\max} \ge |\lambda_{\min}|`; a negative
      result (even converged) says the dominant eigenvalue is negative and
      :math:`\lambda_{\max}` was not found: use :func:`lanczos`.
    - A :math:`\pm\lambda` tie for the largest magnitude: the iterates cycle in the span of
      the two eigenvectors, the residual stays large and the result has
      ``converged=False`` after ``num_iters`` products; the value is the Rayleigh quotient of
      the last iterate, a start-dependent number strictly between :math:`-\lambda` and
      :math:`\lambda`. Use :func:`lanczos`, which resolves the pair.
    - A zero (or non-finite) ``v0`` gives eigenvalue 0 with zero matvecs and
      ``converged=False``; a start in the null space of :math:`A` (e.g. a zero operator)
      stops at the first product with eigenvalue 0 and ``converged=False``; a ``matvec``
      that returns non-finite values stops the iteration at the last finite estimate, with
      ``converged=False``.

    Started on an exact eigenvector it stops after one product. The returned value is always
    a Rayleigh quotient, so it never exceeds :math:`\lambda_{\max}`.

    Args:
      matvec: ``matvec(v)`` :math:`= Av`, a symmetric linear map from pytrees like ``v0`` to
        pytrees like ``v0``.
      v0: start vector :math:`v_0` (any non-zero pytree of floats; it is normalized). Pass
        the previous eigenvector to track the eigenvalue along training in a few products.
      num_iters: maximum number of products (static).
      rtol: relative residual tolerance (may be traced); 0 runs all ``num_iters``.

    Returns:
      :class:`EigResult` with ``eigenvalues`` of shape ``(1,)`` and eigenvector leaves with a
      leading axis of size 1.

    Example:
      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> A = jnp.diag(jnp.array([3.0, 1.0, 0.5]))
      >>> res = cc.power_iteration(lambda v: A @ v, jnp.ones(3), rtol=1e-4)
      >>> round(float(res.eigenvalues[0]), 4), bool(res.converged)
      (3.0, True)
    """
    _check_start(v0)
    num_iters = _tree.check_structural_int(num_iters, "num_iters")
    dtype = _scalar_dtype(v0)
    rtol = jnp.asarray(rtol, dtype)
    v0 = _tree.where(_tree.all_finite(v0), v0, _tree.zeros_like(v0))
    v, norm0 = _normalize(v0)
    zero = jnp.zeros((), dtype)

    def cond(s: _PowerState) -> jax.Array:
        return (s.step < num_iters) & ~s.done

    def body(s: _PowerState) -> _PowerState:
        w = _apply(matvec, s.vector, v0)
        mu = _tree.vdot(s.vector, w)
        residual = _tree.norm(_tree.axpy(-mu, s.vector, w))
        next_vector, norm_w = _normalize(w)
        finite = _tree.all_finite(w) & jnp.isfinite(mu) & jnp.isfinite(residual)
        floor = jnp.finfo(dtype).eps * norm_w  # rounding: no certificate below it
        converged = finite & (norm_w > 0) & (residual + floor <= rtol * jnp.abs(mu))
        stop = converged | ~finite | (norm_w == 0)
        return _PowerState(
            step=s.step + 1,
            vector=_tree.where(stop, s.vector, next_vector),
            eigvec=_tree.where(finite, s.vector, s.eigvec),
            value=jnp.where(finite, mu, s.value),
            done=stop,
            converged=converged,
        )

    init = _PowerState(
        step=jnp.zeros((), jnp.int32),
        vector=v,
        eigvec=v,
        value=zero,
        done=~(norm0 > 0),
        converged=jnp.asarray(False),
    )
    out = jax.lax.while_loop(cond, body, init)
    eigvec = jax.tree.map(lambda x: x[None], out.eigvec)
    return EigResult(out.value[None], eigvec, out.step, out.converged)


# --------------------------------------------------------------------------------------------
# Lanczos
# --------------------------------------------------------------------------------------------


class _LanczosState(NamedTuple):
    step: jax.Array  # matvecs made
    size: jax.Array  # valid rows of the tridiagonal matrix
    basis: PyTree  # leaves (m + 1, *shape): q_0, ..., q_m
    alphas: jax.Array  # (m,) diagonal
    betas: jax.Array  # (m,) betas[j] couples q_j and q_{j+1}; 0 after a breakdown
    dropped: jax.Array  # (m,) the small beta_j a breakdown set to 0 (for residual bounds)
    pending_restart: jax.Array  # row ``step`` is a placeholder for a restart vector
    theta: jax.Array  # (k,) current top Ritz values
    y: jax.Array  # (m, k) their eigenvectors of T
    residuals: jax.Array  # (k,) their residual bounds
    done: jax.Array
    failed: jax.Array  # matvec returned non-finite values


def _ritz(
    alphas: jax.Array, betas: jax.Array, dropped: jax.Array, size: jax.Array, k: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top-``k`` Ritz values, tridiagonal eigenvectors and residual bounds of ``T[:size, :size]``.

    The unused rows are a decoupled diagonal block set below every valid Ritz value (under
    minus twice a bound on the valid block's norm), so they sort last; entries past ``size``
    are returned as zero. The residual bounds include the rounding floor eps ||T||.
    """
    m = alphas.shape[0]
    idx = jnp.arange(m, dtype=jnp.int32)
    valid = idx < size
    a = jnp.where(valid, alphas, 0.0)
    b = jnp.where(idx < size - 1, betas, 0.0)
    bound = jnp.sum(jnp.abs(a)) + 2.0 * jnp.sum(jnp.abs(b))
    # Gershgorin bound on ||T||: rounding makes relative accuracy below eps ||T|| / |θ| moot.
    gershgorin = jnp.max(jnp.abs(a) + jnp.abs(b) + jnp.abs(jnp.roll(b, 1).at[0].set(0.0)))
    diag = jnp.where(valid, a, jnp.where(bound > 0, -2.0 * bound, -1.0))
    tri = jnp.diag(diag) + jnp.diag(b[:-1], 1) + jnp.diag(b[:-1], -1)
    evals, evecs = jnp.linalg.eigh(tri)
    theta = evals[::-1][:k]
    y = jnp.where(valid[:, None], evecs[:, ::-1][:, :k], 0.0)
    theta = jnp.where(jnp.arange(k, dtype=jnp.int32) < size, theta, 0.0)
    last = jax.lax.dynamic_index_in_dim(y, jnp.maximum(size - 1, 0), keepdims=False)
    residual_coupling = jax.lax.dynamic_index_in_dim(betas, jnp.maximum(size - 1, 0), 0, False)
    # ||A Q y - θ Q y|| <= |β_last y_last| + Σ_breakdowns |β_dropped y_j| (triangle inequality).
    residuals = jnp.abs(residual_coupling * last) + jnp.sum(jnp.abs(dropped[:, None] * y), axis=0)
    return theta, y, residuals + jnp.finfo(alphas.dtype).eps * gershgorin


def _converged(theta: jax.Array, residuals: jax.Array, rtol: jax.Array) -> jax.Array:
    return jnp.all((residuals <= rtol * jnp.abs(theta)) & (jnp.abs(theta) > 0))


def lanczos(
    matvec: Matvec, v0: PyTree, *, num_iters: int = 64, k: int = 1, rtol: Any = 1e-3
) -> EigResult:
    r"""Top-``k`` eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    Builds an orthonormal basis :math:`Q_j = [q_0, \dots, q_{j-1}]` of the Krylov space
    :math:`\mathcal K_j(A, v_0) = \mathrm{span}\{v_0, A v_0, \dots, A^{j-1} v_0\}` and the
    tridiagonal :math:`T_j = Q_j^\top A Q_j` (diagonal :math:`\alpha_i = q_i^\top A q_i`,
    off-diagonal :math:`\beta_i = \|r_i\|` with :math:`r_i` the part of :math:`A q_i`
    orthogonal to :math:`Q_{i+1}`, removed by classical Gram-Schmidt applied twice against the
    whole basis). The Ritz values :math:`\theta` (eigenvalues of :math:`T_j`) and Ritz vectors
    :math:`Q_j y` approximate the extreme eigenpairs; the residual of a pair is
    :math:`\|A Q_j y - \theta Q_j y\| = \beta_{j-1} |y_{j-1}|` (plus, after breakdowns, the
    dropped :math:`\beta_i |y_i|`). It stops once every top-``k`` pair has residual bound plus
    rounding floor :math:`\epsilon \|T_j\| \le \mathrm{rtol}\,|\theta|` or after
    :math:`m = \min(\text{num\_iters}, n)` products. At an equal number of products its top
    Ritz value is at least the power iteration's Rayleigh quotient (both lie in
    :math:`\mathcal K_j`), so it is never less accurate for :math:`\lambda_{\max}`.

    Breakdown (:math:`\beta_j \le \sqrt{\epsilon}\,\|A q_j\|`, :math:`\epsilon` the machine
    epsilon: the Krylov space is numerically invariant, e.g. when started on an exact
    eigenvector or on a rank-deficient or zero operator) sets :math:`\beta_j = 0`, which
    leaves :math:`T` block diagonal so the Ritz values found so far stay exact, and the next
    step restarts from a pseudo-random vector orthogonalized against the basis (a fixed hash
    of each entry's position and the step: equal inputs give equal bits, on any sharding). A
    zero or non-finite ``v0`` is a breakdown before the first step. The early stop still
    applies after a breakdown, so a warm start on an exact eigenvector costs one product.
    Like every Krylov method (and power iteration), a start with no component along the top
    eigenvector cannot reveal it: started on an exact *lower* eigenvector with ``k = 1`` it
    reports that eigenvalue, certified; with ``rtol=0`` (or ``k`` larger than the invariant
    subspace) the restarts explore the complement and find the top. Random starts (the
    ``key`` of :func:`hessian_sharpness`) have such components with probability one. A
    ``matvec`` returning non-finite values stops the iteration with the Ritz pairs of the
    finite steps and ``converged=False``.

    Memory: the basis holds :math:`m + 1` vectors (in at least float32) and each step solves an
    :math:`m \times m` symmetric eigenproblem, so keep ``num_iters`` in the tens to hundreds.

    Args:
      matvec: ``matvec(v)`` :math:`= Av`, a symmetric linear map on pytrees like ``v0``.
      v0: start vector (normalized); pass a previous eigenvector to warm-start.
      num_iters: maximum number of products, the Krylov dimension (static; clamped to the
        dimension :math:`n` of ``v0``).
      k: number of eigenpairs, largest algebraic first (static; at most ``num_iters`` and n).
      rtol: relative residual tolerance for the early stop (may be traced); 0 runs all
        :math:`m` products.

    Returns:
      :class:`EigResult` with ``eigenvalues`` of shape ``(k,)`` and eigenvector leaves with a
      leading axis of size ``k``.

    Example:
      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> A = jnp.diag(jnp.array([-5.0, 3.0, 1.0, 0.5]))
      >>> res = cc.lanczos(lambda v: A @ v, jnp.ones(4), num_iters=4, k=2)
      >>> [round(float(x), 4) for x in res.eigenvalues]  # largest algebraic, not |λ|
      [3.0, 1.0]
    """
    n = _check_start(v0)
    num_iters = _tree.check_structural_int(num_iters, "num_iters")
    k = _tree.check_structural_int(k, "k")
    m = min(num_iters, n)
    if k > m:
        raise ValueError(
            f"k={k} eigenpairs need at least k products, but num_iters={num_iters} and the "
            f"dimension of v0 is {n}."
        )
    dtype = _scalar_dtype(v0)
    rtol = jnp.asarray(rtol, dtype)
    tau = jnp.sqrt(jnp.asarray(jnp.finfo(dtype).eps, dtype))
    # Work in at least float32; cast to the dtypes of v0 only to call matvec.
    work = jax.tree.map(lambda x: x.astype(_tree.accumulation_dtype(x.dtype)), v0)
    work = _tree.where(_tree.all_finite(work), work, _tree.zeros_like(work))
    q0, norm0 = _normalize(work)
    basis = jax.tree.map(lambda x: jnp.broadcast_to(jnp.zeros_like(x)[None], (m + 1, *x.shape)), q0)
    basis = _set_row(basis, 0, q0)

    def restart(basis: PyTree, template: PyTree, step: jax.Array) -> PyTree:
        r = _orthogonalize(basis, _hash_like(template, step), dtype)
        return _normalize(r)[0]

    def cond(s: _LanczosState) -> jax.Array:
        return (s.step < m) & ~s.done

    def body(s: _LanczosState) -> _LanczosState:
        j = s.step
        q = _row(s.basis, j)
        # After a breakdown (or a zero v0) row j is a placeholder: draw a fresh direction.
        q = jax.lax.cond(s.pending_restart, lambda: restart(s.basis, q, j), lambda: q)
        basis = _set_row(s.basis, j, q)
        w = _tree.cast_like(_apply(matvec, q, v0), work)
        alpha = _tree.vdot(q, w)
        norm_aq = _tree.norm(w)
        q_next, beta = _normalize(_orthogonalize(basis, w, dtype))
        finite = _tree.all_finite(w) & jnp.isfinite(alpha) & jnp.isfinite(beta)
        breakdown = finite & (beta <= tau * norm_aq)
        keep = finite & ~breakdown
        raw_beta = jnp.where(finite, beta, 0.0)
        beta = jnp.where(keep, beta, 0.0)
        alphas = s.alphas.at[j].set(jnp.where(finite, alpha, 0.0))
        betas = s.betas.at[j].set(beta)
        dropped = s.dropped.at[j].set(jnp.where(breakdown, raw_beta, 0.0))
        size = jnp.where(finite, j + 1, j)
        theta, y, residuals = _ritz(alphas, betas, dropped, size, k)
        stop = (size >= k) & _converged(theta, residuals, rtol)
        return _LanczosState(
            step=j + 1,
            size=size,
            basis=_set_row(basis, j + 1, _tree.where(keep, q_next, _tree.zeros_like(q_next))),
            alphas=alphas,
            betas=betas,
            dropped=dropped,
            pending_restart=breakdown,
            theta=theta,
            y=y,
            residuals=residuals,
            done=stop | ~finite,
            failed=~finite,
        )

    init = _LanczosState(
        step=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
        basis=basis,
        alphas=jnp.zeros((m,), dtype),
        betas=jnp.zeros((m,), dtype),
        dropped=jnp.zeros((m,), dtype),
        pending_restart=~(norm0 > 0),
        theta=jnp.zeros((k,), dtype),
        y=jnp.zeros((m, k), dtype),
        residuals=jnp.zeros((k,), dtype),
        done=jnp.asarray(False),
        failed=jnp.asarray(False),
    )
    out = jax.lax.while_loop(cond, body, init)
    theta, residuals = out.theta, out.residuals
    vectors = _combine(out.y.T, jax.tree.map(lambda b: b[:m], out.basis))
    # Unit norm per vector (Q_j has orthonormal columns, so this only removes rounding).
    norms = sum(
        (
            jnp.sum(x * x, axis=tuple(range(1, x.ndim))).astype(dtype)
            for x in jax.tree.leaves(vectors)
        ),
        jnp.zeros((k,), dtype),
    )
    ok = norms > 0
    inv = jnp.where(ok, 1.0 / jnp.sqrt(jnp.where(ok, norms, 1.0)), 0.0)
    vectors = jax.tree.map(
        lambda x, v: (x * inv.astype(x.dtype).reshape((k,) + (1,) * (x.ndim - 1))).astype(v.dtype),
        vectors,
        v0,
    )
    converged = ~out.failed & (out.size >= k) & _converged(theta, residuals, rtol)
    return EigResult(theta, vectors, out.step, converged)


# --------------------------------------------------------------------------------------------
# Hessian sharpness
# --------------------------------------------------------------------------------------------


def _warm_start(v0: PyTree, params: PyTree) -> PyTree:
    """``v0`` like ``params``, or a stack of vectors (leading axis) summed into one."""
    struct: Any = jax.tree.structure(params)  # PyTreeDef: untyped for mypy
    if struct == jax.tree.structure(v0):
        pairs = list(zip(jax.tree.leaves(params), jax.tree.leaves(v0), strict=True))
        same = all(np.shape(v) == np.shape(p) for p, v in pairs)
        stacked = all(
            np.shape(v)[1:] == np.shape(p) and np.ndim(v) == np.ndim(p) + 1 for p, v in pairs
        )
        if pairs and not same and stacked:
            v0 = jax.tree.map(lambda v: jnp.sum(v, axis=0), v0)
    return _tree.match_dtypes(params, v0, "v0")


def _inverse_sqrt(preconditioner: PyTree, params: PyTree) -> PyTree:
    r"""Leafwise :math:`P^{-1/2}`, 0 where :math:`P \le 0` or non-finite (double ``where``)."""
    p = _tree.match_dtypes(params, preconditioner, "preconditioner")

    def leaf(x: jax.Array) -> jax.Array:
        ok = (x > 0) & jnp.isfinite(x)
        return jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, x, 1.0)), 0.0)

    return jax.tree.map(leaf, p)


def hessian_sharpness(
    fun: Callable[..., Any],
    params: PyTree,
    *args: Any,
    key: jax.Array | None = None,
    method: str = "lanczos",
    num_iters: int | None = None,
    k: int = 1,
    rtol: Any = 1e-3,
    preconditioner: PyTree | None = None,
    v0: PyTree | None = None,
) -> EigResult:
    r"""Top eigenvalue(s) of the Hessian :math:`\nabla^2 f(w)`, optionally preconditioned.

    Without ``preconditioner`` the operator is :math:`H = \nabla^2 f(w)`, applied by
    :func:`cdat_core.hvp` (forward over reverse), and ``eigenvalues[0]`` is the sharpness
    :math:`\lambda_{\max}(H)` (appendix C.4 of Roulet et al., 2024). With a diagonal
    preconditioner :math:`P` (a pytree like ``params``), it is the preconditioned Hessian of
    appendix B.1,

    .. math::

        \tilde H = P^{-1/2} \nabla^2 f(w) P^{-1/2}, \qquad
        \tilde H v = P^{-1/2} \big(\nabla^2 f(w) (P^{-1/2} v)\big),

    whose top eigenvalue sets the edge of stability of the update
    :math:`w_{t+1} = w_t - \eta P^{-1} \nabla f(w_t)` (RMSProp/Adam:
    :math:`P = \mathrm{diag}(\sqrt{\nu} + \varepsilon)`, see
    :func:`preconditioner_from_optax_state`). Entries with :math:`P \le 0` are projected out.
    The eigenvectors are then those of :math:`\tilde H`; :math:`P^{-1/2} x` maps one back to
    parameter space.

    Args:
      fun: ``fun(params, *args)`` returning a real scalar.
      params: :math:`w`, a pytree of float arrays (checked at trace time).
      *args: data passed to ``fun``; not differentiated.
      key: PRNG key for the random start (standard normal, one split key per leaf, sharded
        like ``params``); same key, same bits. Needed unless ``v0`` is given.
      method: ``"lanczos"`` (default; top-``k`` algebraic) or ``"power"`` (dominant
        magnitude, ``k = 1``; see :func:`power_iteration` for a negative result).
      num_iters: maximum number of Hessian-vector products; ``None`` gives 64 for Lanczos and
        1000 for power iteration (the paper's bound).
      k: number of eigenpairs (Lanczos only).
      rtol: relative residual tolerance of the early stop (may be traced).
      preconditioner: the diagonal of :math:`P`, a pytree like ``params``, or ``None``.
      v0: warm start, overriding ``key``: a pytree like ``params`` or a previous
        ``EigResult.eigenvectors`` (leading axis ``k``; its vectors are summed). Tracking
        :math:`\lambda_{\max}` along training from the previous eigenvector costs a few
        products per call.

    Returns:
      :class:`EigResult` (eigenvectors like ``params`` with a leading axis ``k``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import cdat_core as cc
      >>> f = lambda w: 0.5 * (3.0 * w["a"][0] ** 2 + w["a"][1] ** 2) + jnp.cosh(w["b"])
      >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(())}
      >>> res = cc.hessian_sharpness(f, params, key=jax.random.key(0))
      >>> round(float(res.eigenvalues[0]), 4), bool(res.converged)
      (3.0, True)
      >>> P = {"a": jnp.array([3.0, 1.0]), "b": jnp.ones(())}  # whitens the quadratic
      >>> pre = cc.hessian_sharpness(f, params, key=jax.random.key(0), preconditioner=P)
      >>> round(float(pre.eigenvalues[0]), 4)
      1.0
    """
    _check_start(params, "params")
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    if method == "power" and k != 1:
        raise ValueError(f"method='power' finds one eigenvalue; got k={k} (use 'lanczos').")
    _tree.check_scalar_output(jax.eval_shape(lambda w: fun(w, *args), params))
    scaling = None if preconditioner is None else _inverse_sqrt(preconditioner, params)
    if v0 is not None:
        start = _warm_start(v0, params)
    elif key is None:
        raise TypeError("hessian_sharpness needs key= (random start) or v0= (warm start).")
    else:
        start = _tree.normal_like(key, params)

    def matvec(v: PyTree) -> PyTree:
        if scaling is None:
            return hvp(fun, params, v, *args)
        hv = hvp(fun, params, jax.tree.map(jnp.multiply, scaling, v), *args)
        return jax.tree.map(jnp.multiply, scaling, hv)

    if method == "power":
        return power_iteration(
            matvec, start, num_iters=1000 if num_iters is None else num_iters, rtol=rtol
        )
    return lanczos(matvec, start, num_iters=64 if num_iters is None else num_iters, k=k, rtol=rtol)


# --------------------------------------------------------------------------------------------
# Preconditioner of adaptive optimizers
# --------------------------------------------------------------------------------------------


def _unique(opt_state: Any, name: str, where: str) -> tuple[Any, Any]:
    found = optax.tree.get_all_with_path(opt_state, name)
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one {name!r} {where} in opt_state, found {len(found)}; pass the "
            f"state of a single optax.adam/adamw/rmsprop/scale_by_rms (or the sub-state "
            f"holding it)."
        )
    return found[0]


def preconditioner_from_optax_state(
    opt_state: Any, *, eps: Any = 1e-8, b2: Any = None, eps_in_sqrt: bool = False
) -> PyTree:
    r"""Diagonal preconditioner :math:`P` of an RMSProp/Adam state, for :func:`hessian_sharpness`.

    Finds the second-moment estimate :math:`\nu` (the field ``nu``,
    :math:`\nu_t = (1 - \beta_2) g_t^2 + \beta_2 \nu_{t-1}`, :math:`g_t` the gradient) in an
    optax state and returns the pytree

    .. math::

        P = \sqrt{\hat\nu} + \varepsilon \quad (\text{or } \sqrt{\hat\nu + \varepsilon}
        \text{ with ``eps_in_sqrt``}), \qquad
        \hat\nu = \begin{cases} \nu / (1 - \beta_2^{\,t}) & \text{``b2`` given} \\
        \nu & \text{``b2=None''} \end{cases}

    with :math:`t` the ``count`` stored beside ``nu``. This is the :math:`P` of the *last*
    update the state was used for: :math:`w_{t+1} = w_t - \eta P^{-1} m` with :math:`m` the
    (bias-corrected) first moment or the gradient (appendix B.1 of Roulet et al., 2024).

    Bias correction: the paper's RMSProp (B.1) and ``optax.rmsprop`` (default) have none:
    leave ``b2=None``. ``optax.adam``/``adamw`` divide by :math:`\sqrt{\hat\nu}` with
    :math:`\hat\nu = \nu / (1 - \beta_2^t)`; the state does not store :math:`\beta_2`, so
    pass the optimizer's ``b2`` (0.999 by default in optax) to get Adam's effective
    preconditioner. ``optax.rmsprop(..., eps_in_sqrt=True)`` (its default) divides by
    :math:`\sqrt{\nu + \varepsilon}`: pass ``eps_in_sqrt=True`` and its ``eps``. At
    :math:`t = 0` no correction is applied.

    Args:
      opt_state: an optax state holding exactly one ``nu`` (e.g. of ``optax.adam``,
        ``optax.rmsprop``, or a chain containing one of them).
      eps: :math:`\varepsilon`, the optimizer's ``eps``.
      b2: :math:`\beta_2` for Adam's bias correction, or ``None`` for none.
      eps_in_sqrt: put :math:`\varepsilon` inside the square root.

    Returns:
      :math:`P`, a pytree with the structure and dtypes of ``nu``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> params = {"w": jnp.zeros(2)}
      >>> opt = optax.adam(0.1, b1=0.0, b2=0.99, eps=1e-8)
      >>> grads = {"w": jnp.array([2.0, -0.5])}
      >>> updates, state = opt.update(grads, opt.init(params))
      >>> P = cc.preconditioner_from_optax_state(state, eps=1e-8, b2=0.99)
      >>> bool(jnp.allclose(updates["w"], -0.1 * grads["w"] / P["w"]))  # u = -ηP⁻¹g
      True
    """
    nu_path, nu = _unique(opt_state, "nu", "(second moment)")
    _tree.check_float_tree(nu, "opt_state.nu")
    if b2 is not None:
        owner = jax.tree_util.keystr(nu_path[:-1])
        counts = [
            (p, c)
            for p, c in optax.tree.get_all_with_path(opt_state, "count")
            if jax.tree_util.keystr(p[:-1]) == owner
        ]
        if len(counts) != 1:
            raise ValueError(
                "b2 was given for Adam's bias correction, but no 'count' sits beside 'nu' in "
                "opt_state (RMSProp without bias correction has none: use b2=None)."
            )
        count = counts[0][1]

        def corrected(x: jax.Array) -> jax.Array:
            t = jnp.asarray(count).astype(x.dtype)
            denom = 1.0 - jnp.power(jnp.asarray(b2, x.dtype), t)
            ok = (t > 0) & (denom > 0)
            return jnp.where(ok, x / jnp.where(ok, denom, 1.0), x)

        nu = jax.tree.map(corrected, nu)

    def leaf(x: jax.Array) -> jax.Array:
        e = jnp.asarray(eps, x.dtype)
        x = jnp.maximum(x, jnp.zeros_like(x))
        return jnp.sqrt(x + e) if eps_in_sqrt else jnp.sqrt(x) + e

    return jax.tree.map(leaf, nu)
