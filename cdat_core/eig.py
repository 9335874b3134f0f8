r"""Top eigenpairs of a symmetric operator on pytrees: power iteration and Lanczos.

Notation (Roulet et al., 2024, "Stepping on the Edge", appendices B.1 and C.4): :math:`A` a
symmetric linear operator on a pytree space of dimension :math:`n` (the total number of
entries of the leaves), given only through ``matvec(v)`` :math:`= Av`; its eigenvalues
:math:`\lambda_1 \ge \dots \ge \lambda_n`. :mod:`cdat_core.sharpness` applies these solvers to the
Hessian (its top eigenvalue is the *sharpness*); :mod:`cdat_core.spectrum`-style tools can reuse
the Lanczos tridiagonal through :func:`_lanczos_tridiagonal`.

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

from cdat_core import _krylov, _tree

__all__ = ["EigResult", "lanczos", "power_iteration"]

PyTree = Any
Matvec = Callable[[PyTree], PyTree]


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
# Private helpers: input checks and the checked matvec.
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
    v, norm0 = _krylov.normalize(v0)
    zero = jnp.zeros((), dtype)

    def cond(s: _PowerState) -> jax.Array:
        return (s.step < num_iters) & ~s.done

    def body(s: _PowerState) -> _PowerState:
        w = _apply(matvec, s.vector, v0)
        mu = _tree.vdot(s.vector, w)
        residual = _tree.norm(_tree.axpy(-mu, s.vector, w))
        next_vector, norm_w = _krylov.normalize(w)
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
    q0, norm0 = _krylov.normalize(work)
    basis = jax.tree.map(lambda x: jnp.broadcast_to(jnp.zeros_like(x)[None], (m + 1, *x.shape)), q0)
    basis = _krylov.set_row(basis, 0, q0)

    def restart(basis: PyTree, template: PyTree, step: jax.Array) -> PyTree:
        r = _krylov.orthogonalize(basis, _krylov.hash_like(template, step), dtype)
        return _krylov.normalize(r)[0]

    def cond(s: _LanczosState) -> jax.Array:
        return (s.step < m) & ~s.done

    def body(s: _LanczosState) -> _LanczosState:
        j = s.step
        q = _krylov.row(s.basis, j)
        # After a breakdown (or a zero v0) row j is a placeholder: draw a fresh direction.
        q = jax.lax.cond(s.pending_restart, lambda: restart(s.basis, q, j), lambda: q)
        basis = _krylov.set_row(s.basis, j, q)
        w = _tree.cast_like(_apply(matvec, q, v0), work)
        alpha = _tree.vdot(q, w)
        norm_aq = _tree.norm(w)
        q_next, beta = _krylov.normalize(_krylov.orthogonalize(basis, w, dtype))
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
            basis=_krylov.set_row(
                basis, j + 1, _tree.where(keep, q_next, _tree.zeros_like(q_next))
            ),
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
    vectors = _krylov.combine(out.y.T, jax.tree.map(lambda b: b[:m], out.basis))
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
