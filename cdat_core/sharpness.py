r"""Sharpness: the top eigenvalues of the (preconditioned) Hessian, and Adam's preconditioner.

Notation (Roulet et al., 2024, "Stepping on the Edge", appendices B.1 and C.4):
:math:`H = \nabla^2 f(w)` the Hessian of the objective, whose top eigenvalue
:math:`\lambda_{\max}(H)` is the *sharpness*; :math:`P` a diagonal preconditioner. The
eigensolvers themselves (:func:`cdat_core.power_iteration`, :func:`cdat_core.lanczos`, the
:class:`cdat_core.EigResult` they return) live in :mod:`cdat_core.eig`; this module applies
them to :math:`H` through :func:`cdat_core.hvp` and reads :math:`P` from optax states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core import _krylov, _tree
from cdat_core.curvature import hvp
from cdat_core.eig import (
    EigResult,
    _check_start,
    _lanczos_tridiagonal,
    _ritz_result,
    lanczos,
    power_iteration,
)

__all__ = ["hessian_sharpness", "preconditioner_from_optax_state"]

PyTree = Any


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

    What ``converged`` certifies: the residual certificate of :mod:`cdat_core.eig` for the
    returned value :math:`\theta` (an eigenvalue of the operator within
    :math:`\tau(\theta) = \mathrm{rtol}\max(|\theta|, \sqrt{\epsilon}\|H\|)` of it), which
    is :math:`\lambda_{\max}` to that tolerance whenever the Krylov space has seen the top
    eigenvector. Lanczos returns the largest *algebraic* value, so a negative or zero
    :math:`\lambda_{\max}` is found and certified; with ``num_iters`` at least the number of
    params it runs to an exact answer. ``method="power"`` finds the largest *magnitude*;
    its result is checked with 8 more products (a Lanczos run from its vector, whose top
    Ritz pair is returned), and is certified only if that check agrees within the tolerance,
    so a negative dominant eigenvalue, or a power iteration stalled near :math:`\lambda_2`
    of a close top pair, comes back with ``converged=False`` (and the check's better value).
    No Krylov method can certify :math:`\lambda_{\max}` against a start vector nearly
    orthogonal to its eigenvector. Measured on MLP Hessians (123 params) whose top two
    eigenvalues are 0.75% and 0.99% apart, at ``rtol=1e-3``: 3 and 5 of 100 random starts
    gave Lanczos a certified value near :math:`\lambda_2` (0.7-1% low), since the close pair
    is resolved late; ``method="power"`` gave none (its check found :math:`\lambda_1`). A
    smaller ``rtol`` makes this rarer; ``num_iters`` at least the number of params rules it out.

    Args:
      fun: ``fun(params, *args)`` returning a real scalar.
      params: :math:`w`, a pytree of float arrays (checked at trace time).
      *args: data passed to ``fun``; not differentiated.
      key: PRNG key for the random start (standard normal, one split key per leaf, sharded
        like ``params``); same key, same bits. Needed unless ``v0`` is given.
      method: ``"lanczos"`` (default; top-``k`` algebraic) or ``"power"`` (``k = 1``): the
        paper's power iteration, then a check of its result, see below.
      num_iters: maximum number of Hessian-vector products; ``None`` gives 64 for Lanczos and
        1000 for power iteration (the paper's bound).
      k: number of eigenpairs (Lanczos only).
      rtol: relative tolerance of the certificate and early stop (may be traced).
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
        num_iters = 1000 if num_iters is None else num_iters
        return _checked_power(matvec, start, num_iters=num_iters, rtol=rtol)
    return lanczos(matvec, start, num_iters=64 if num_iters is None else num_iters, k=k, rtol=rtol)


#: Products of the Lanczos run that checks a power-iteration result (see _checked_power).
_CHECK_ITERS = 8


def _checked_power(
    matvec: Callable[[PyTree], PyTree], start: PyTree, *, num_iters: int, rtol: Any
) -> EigResult:
    r"""Power iteration, then ``_CHECK_ITERS`` Lanczos products from its vector :math:`v`.

    Power iteration certifies only that *an* eigenvalue is near its value :math:`\mu`: it
    finds the largest magnitude (a negative :math:`\mu` is :math:`\lambda_{\min}`), and on a
    close top pair it can stop near :math:`\lambda_2` with the :math:`v_1` component still
    small. Its iterates have by then filtered out most of the spectrum, so a few Lanczos
    steps from :math:`v` (a Rayleigh-Ritz on :math:`\mathcal K(H, v)`, which contains
    :math:`v`) resolve what is left. The result is that top Ritz pair (at least :math:`\mu`,
    never above :math:`\lambda_{\max}`); it is ``converged`` only if power iteration
    converged, the pair passes the certificate, and it agrees with :math:`\mu` within the
    tolerance, so a value that grew (a hidden :math:`\lambda_1`, or any :math:`\lambda`
    above a negative :math:`\mu`) is returned uncertified.
    """
    power = power_iteration(matvec, start, num_iters=num_iters, rtol=rtol)
    vector = jax.tree.map(lambda x: x[0], power.eigenvectors)
    n = _check_start(start)
    tri = _lanczos_tridiagonal(matvec, vector, num_iters=min(_CHECK_ITERS, n), rtol=0.0)
    dtype = tri.alphas.dtype
    check = _ritz_result(tri, vector, 1, jnp.asarray(rtol, dtype))
    mu, theta = power.eigenvalues[0], check.eigenvalues[0]
    scale = jnp.maximum(jnp.abs(mu), jnp.abs(theta))
    agree = theta - mu <= _krylov.tolerance(mu, scale, jnp.asarray(rtol, dtype))
    converged = power.converged & check.converged & agree
    return EigResult(
        check.eigenvalues, check.eigenvectors, power.num_iters + tri.num_iters, converged
    )


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
