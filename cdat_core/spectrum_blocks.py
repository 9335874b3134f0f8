r"""Sharpness of a block of parameters, Gauss-Newton sharpness, and update alignment.

Notation as in :mod:`cdat_core.sharpness`: :math:`H = \nabla^2 f(w)`, :math:`P` a diagonal
preconditioner, :math:`\lambda_{\max}` the top eigenvalue (the *sharpness*).

- :func:`block_sharpness`: top eigenvalues of the Hessian restricted to a block of
  parameters :math:`B` (chosen by a mask, e.g. one layer),
  :math:`H_{BB} = \nabla^2_{w_B} f(w)`: per-layer sharpness.
- :func:`gauss_newton_sharpness`: top eigenvalues of the Gauss-Newton matrix
  :math:`G = J^\top \nabla^2 \ell\, J` of :math:`f = \ell \circ m`, with products by a JVP
  through the model, the loss's Hessian at the outputs, and a VJP (transpose of that JVP):
  no second derivative of the model, no reverse-over-reverse.
- :func:`update_alignment`: :math:`|\langle u, v_{\max}\rangle| / \|u\|` for an update
  :math:`u` and the (preconditioned) top eigenvector (Roulet et al., 2024, Fig. 12 and 17),
  and the cosine between successive updates (Fig. 17).

The eigensolvers are those of :func:`cdat_core.hessian_sharpness` (Lanczos by default, with
its certificate in :class:`cdat_core.EigResult`); structural settings are static, so each
entry point compiles once per structure. Spectral density, trace and diagonal live in
:mod:`cdat_core.spectrum` and :mod:`cdat_core.spectrum_trace`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cdat_core import _tree
from cdat_core.eig import EigResult, _check_start, _scalar_dtype, lanczos
from cdat_core.sharpness import _inverse_sqrt, _warm_start, hessian_sharpness

__all__ = ["UpdateAlignment", "block_sharpness", "gauss_newton_sharpness", "update_alignment"]

PyTree = Any


# --------------------------------------------------------------------------------------------
# Block sharpness
# --------------------------------------------------------------------------------------------


def _selection(mask: Any, params: PyTree) -> list[bool]:
    """One Python bool per leaf of ``params``, from a mask pytree (or prefix) or a callable."""
    tree = mask(params) if callable(mask) else mask
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), tree, params)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "mask must be a pytree of bools with the structure of params, or a prefix of it "
            f"(as in optax.masked), or a callable returning one; got {tree!r}: {err}"
        ) from None
    flags = jax.tree_util.tree_leaves_with_path(full)
    for path, flag in flags:
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(
                f"mask{jax.tree_util.keystr(path)} must be a Python bool (the block is chosen "
                f"at trace time, leaf by leaf), got {type(flag).__name__}. To select part of "
                "a leaf, split it into two leaves."
            )
    selected = [bool(flag) for _, flag in flags]
    if not any(selected):
        raise ValueError("mask selects no parameters: mark at least one leaf of params True.")
    return selected


def _restrict(tree: PyTree, selected: list[bool]) -> PyTree:
    """``tree`` with its unselected leaves replaced by ``None`` (empty subtrees)."""
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(
        treedef, [x if s else None for x, s in zip(leaves, selected, strict=True)]
    )


def _expand(block: PyTree, params: PyTree, selected: list[bool], fill: Callable) -> PyTree:
    """Leaves of ``block`` in the selected positions of ``params``, ``fill(leaf)`` elsewhere."""
    it = iter(jax.tree.leaves(block))
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(
        treedef, [next(it) if s else fill(x) for x, s in zip(leaves, selected, strict=True)]
    )


def block_sharpness(
    fun: Callable[..., Any],
    params: PyTree,
    *args: Any,
    mask: Any,
    key: jax.Array | None = None,
    method: str = "lanczos",
    num_iters: int | None = None,
    k: int = 1,
    rtol: Any = 1e-3,
    preconditioner: PyTree | None = None,
    v0: PyTree | None = None,
) -> EigResult:
    r"""Top eigenvalue(s) of the Hessian restricted to a block of parameters.

    With :math:`B` the entries of the leaves that ``mask`` selects and the others held
    fixed, the operator is the principal sub-Hessian
    :math:`H_{BB} = \nabla^2_{w_B} f(w) = E_B^\top \nabla^2 f(w) E_B` (or
    :math:`P_B^{-1/2} H_{BB} P_B^{-1/2}` with ``preconditioner``), computed as
    :func:`cdat_core.hessian_sharpness` of :math:`w_B \mapsto f(w_B, w_{\bar B})`: the
    Hessian-vector products differentiate only through the block, and everything
    ``hessian_sharpness`` certifies holds for :math:`H_{BB}` (its eigenvalues interlace
    those of :math:`H`, so :math:`\lambda_{\max}(H_{BB}) \le \lambda_{\max}(H)`). A mask per
    layer gives per-layer sharpness.

    Cost: as :func:`cdat_core.hessian_sharpness` on the block (at most ``num_iters``
    Hessian-vector products, ``num_iters`` in the result), each product a forward and a
    backward pass of the model with tangents on the block only.

    Args:
      fun: ``fun(params, *args)`` returning a real scalar.
      params: :math:`w`, a pytree of float arrays.
      *args: data passed to ``fun``; not differentiated.
      mask: which leaves form the block: a pytree of Python bools with the structure of
        ``params`` or a prefix of it (a bool for a whole subtree), or a callable
        ``mask(params)`` returning one, as in ``optax.masked``. Whole leaves only.
      key: PRNG key of the random start (on the block); needed unless ``v0`` is given.
      method: ``"lanczos"`` or ``"power"``, as in :func:`cdat_core.hessian_sharpness`.
      num_iters: maximum number of products (static; ``None``: 64 Lanczos, 1000 power).
      k: number of eigenpairs (Lanczos only).
      rtol: relative tolerance of the certificate and early stop (may be traced).
      preconditioner: the diagonal of :math:`P`, a pytree like ``params``, or ``None``.
      v0: warm start like ``params`` (or a previous result's ``eigenvectors``); only its
        entries in the block are used.

    Returns:
      :class:`cdat_core.EigResult` of :math:`H_{BB}`; eigenvectors like ``params`` with a
      leading axis ``k`` and zeros outside the block (so they feed
      :func:`update_alignment` and ``v0`` directly).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import cdat_core as cc
      >>> f = lambda w: 0.5 * (4.0 * w["a"] ** 2 + 2.0 * w["a"] * w["b"] + w["b"] ** 2)
      >>> params = {"a": jnp.zeros(()), "b": jnp.zeros(())}  # H = [[4, 1], [1, 1]]
      >>> res = cc.block_sharpness(f, params, mask={"a": False, "b": True},
      ...                          key=jax.random.key(0))
      >>> float(res.eigenvalues[0]), float(res.eigenvectors["a"][0])  # H_bb = 1
      (1.0, 0.0)
    """
    _check_start(params, "params")
    selected = _selection(mask, params)
    treedef: Any = jax.tree.structure(params)  # PyTreeDef: untyped for mypy

    def block_fun(block: PyTree, *a: Any) -> Any:
        return fun(_expand(block, params, selected, lambda x: x), *a)

    pre = None
    if preconditioner is not None:
        pre = _restrict(_tree.match_dtypes(params, preconditioner, "preconditioner"), selected)
    if v0 is not None:
        if not jax.tree.structure(v0) == treedef:
            raise ValueError(
                f"v0 must have the pytree structure of params (e.g. a previous result's "
                f"eigenvectors); got\n  params: {treedef}\n  v0:     {jax.tree.structure(v0)}"
            )
        v0 = _restrict(v0, selected)  # like the block, or a stack of such (summed)
    result = hessian_sharpness(
        block_fun,
        _restrict(params, selected),
        *args,
        key=key,
        method=method,
        num_iters=num_iters,
        k=k,
        rtol=rtol,
        preconditioner=pre,
        v0=v0,
    )

    def zeros(x: Any) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.broadcast_to(jnp.zeros_like(x)[None], (k, *x.shape))

    vectors = _expand(result.eigenvectors, params, selected, zeros)
    return result._replace(eigenvectors=vectors)


# --------------------------------------------------------------------------------------------
# Gauss-Newton sharpness
# --------------------------------------------------------------------------------------------


def gauss_newton_sharpness(
    predict: Callable[..., Any],
    loss: Callable[[Any], Any],
    params: PyTree,
    *args: Any,
    key: jax.Array | None = None,
    num_iters: int = 64,
    k: int = 1,
    rtol: Any = 1e-3,
    preconditioner: PyTree | None = None,
    v0: PyTree | None = None,
) -> EigResult:
    r"""Top eigenvalue(s) of the Gauss-Newton matrix :math:`G = J^\top \nabla^2 \ell\, J`.

    For :math:`f(w) = \ell(m(w))` with ``predict`` :math:`m` and ``loss`` :math:`\ell`,
    :math:`J` the Jacobian of :math:`m` at :math:`w`, as in
    :func:`cdat_core.gauss_newton_curvature`. A product

    .. math:: G v = J^\top \big(\nabla^2 \ell(m(w))\, (J v)\big)

    is one JVP through the model (``jax.linearize``, whose forward pass is made once for the
    whole run), one Hessian-vector product of the loss at the outputs (JVP of its gradient:
    cheap, the loss acts on outputs only) and one VJP, the transpose of that same linear JVP
    (``jax.linear_transpose``). The model is never differentiated twice: no
    reverse-over-reverse, no second derivatives of :math:`m`. With ``preconditioner`` the
    operator is :math:`P^{-1/2} G P^{-1/2}`. The eigensolver is :func:`cdat_core.lanczos`
    (largest algebraic first, certified at ``rtol``). :math:`G` is positive semi-definite
    when :math:`\ell` is convex in the outputs.

    Cost: one linearization (a forward pass storing the model's residuals), then at most
    ``num_iters`` products (``num_iters`` in the result), each about a JVP and a VJP of the
    model: cheaper than a Hessian-vector product, which differentiates the gradient.

    Args:
      predict: ``predict(params, *args)`` returning the model outputs (a pytree of floats).
      loss: ``loss(outputs)`` returning a real scalar (close over the targets).
      params: :math:`w`, a pytree of float arrays.
      *args: extra positional arguments passed to ``predict``.
      key: PRNG key of the random start; needed unless ``v0`` is given.
      num_iters: maximum number of products (static).
      k: number of eigenpairs (static).
      rtol: relative tolerance of the certificate and early stop (may be traced).
      preconditioner: the diagonal of :math:`P`, a pytree like ``params``, or ``None``.
      v0: warm start like ``params`` (or a previous result's ``eigenvectors``).

    Returns:
      :class:`cdat_core.EigResult` of :math:`G` (eigenvectors like ``params``, leading
      axis ``k``).

    Example:
      A linear model with squared loss: :math:`G = X^\top X` (here the Hessian too).

      >>> import jax, jax.numpy as jnp
      >>> import cdat_core as cc
      >>> X = jnp.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]); y = jnp.ones(3)
      >>> predict = lambda w, X: X @ w
      >>> loss = lambda out: 0.5 * jnp.sum((out - y) ** 2)
      >>> res = cc.gauss_newton_sharpness(predict, loss, jnp.zeros(2), X,
      ...                                 key=jax.random.key(0), k=2)
      >>> [round(float(x), 4) for x in res.eigenvalues]  # eigenvalues of XᵀX
      [4.0, 1.0]
    """
    _check_start(params, "params")
    outputs, jvp = jax.linearize(lambda w: predict(w, *args), params)
    _tree.check_float_tree(outputs, "predict(params, *args)")
    objective = _tree.scalar_output(lambda out: loss(out), "loss")
    _, loss_hvp = jax.linearize(jax.grad(objective), outputs)
    vjp = jax.linear_transpose(jvp, params)
    scaling = None if preconditioner is None else _inverse_sqrt(preconditioner, params)

    def matvec(v: PyTree) -> PyTree:
        if scaling is not None:
            v = jax.tree.map(jnp.multiply, scaling, v)
        out = _tree.cast_like(vjp(_tree.cast_like(loss_hvp(jvp(v)), outputs))[0], params)
        return out if scaling is None else jax.tree.map(jnp.multiply, scaling, out)

    if v0 is not None:
        start = _warm_start(v0, params)
    elif key is None:
        raise TypeError("gauss_newton_sharpness needs key= (random start) or v0= (warm start).")
    else:
        start = _tree.normal_like(key, params)
    return lanczos(matvec, start, num_iters=num_iters, k=k, rtol=rtol)


# --------------------------------------------------------------------------------------------
# Update alignment
# --------------------------------------------------------------------------------------------


class UpdateAlignment(NamedTuple):
    r"""How an update lines up with the top eigenvector and with the previous update.

    Attributes:
      alignment: :math:`|\langle \tilde u, \hat x\rangle| / \|\tilde u\|` in :math:`[0, 1]`
        (0 for a zero update).
      cosine: :math:`\langle u_t, u_{t-1}\rangle / (\|u_t\| \|u_{t-1}\|)` in :math:`[-1, 1]`
        (0 when either update is zero or none was given).
    """

    alignment: jax.Array
    cosine: jax.Array


def _first_vector(eigenvector: PyTree, update: PyTree) -> PyTree:
    """``eigenvector`` like ``update``, or the first of a stack (an ``EigResult``'s vectors)."""
    u_leaves = jax.tree.leaves(update)
    struct: Any = jax.tree.structure(update)  # PyTreeDef: untyped for mypy
    if struct == jax.tree.structure(eigenvector) and all(
        np.shape(x)[1:] == np.shape(u) and np.ndim(x) == np.ndim(u) + 1
        for x, u in zip(jax.tree.leaves(eigenvector), u_leaves, strict=True)
    ):
        eigenvector = jax.tree.map(lambda x: x[0], eigenvector)
    return _tree.match_dtypes(update, eigenvector, "eigenvector")


def _cosine(x: PyTree, y: PyTree) -> jax.Array:
    r"""``<x, y> / (|x| |y|)`` (signed), 0 when a norm is 0 or anything is non-finite."""
    denom = _tree.norm(x) * _tree.norm(y)
    num = _tree.vdot(x, y)
    ok = (denom > 0) & jnp.isfinite(denom) & jnp.isfinite(num)
    return jnp.where(ok, jnp.clip(num / jnp.where(ok, denom, 1.0), -1.0, 1.0), 0.0)


def update_alignment(
    update: PyTree,
    eigenvector: PyTree,
    *,
    previous_update: PyTree | None = None,
    preconditioner: PyTree | None = None,
) -> UpdateAlignment:
    r"""Alignment of an update with the top eigenvector, and the cosine of successive updates.

    The alignment of the update :math:`u = w_{t+1} - w_t` with the top eigenvector
    :math:`x` of the Hessian (Roulet et al., 2024, Fig. 12, fourth panel, and Fig. 17) is

    .. math:: a = \frac{|\langle \tilde u, x\rangle|}{\|\tilde u\|\,\|x\|} \in [0, 1],
        \qquad \tilde u = P^{1/2} u,

    with :math:`P = I` without ``preconditioner``. With one, :math:`x` is the top
    eigenvector of :math:`P^{-1/2} H P^{-1/2}` (what :func:`cdat_core.hessian_sharpness`
    returns with that ``preconditioner``), which lives in the coordinates
    :math:`\tilde w = P^{1/2} w` where the preconditioned update is a plain gradient step; so
    :math:`u` is mapped there first (entries with :math:`P \le 0` are dropped, as in
    ``hessian_sharpness``). The cosine between successive updates (Fig. 17) is
    :math:`c = \langle u_t, u_{t-1}\rangle / (\|u_t\|\,\|u_{t-1}\|)` in parameter space: -1
    when the iterates oscillate across a valley, as at the edge of stability. Both are
    guarded: a zero or non-finite vector gives 0, never NaN.

    Cost: no Hessian products (a few inner products); the eigenvector comes from
    :func:`cdat_core.hessian_sharpness` (whose ``v0`` keeps it cheap to track).

    Args:
      update: :math:`u_t`, a pytree of floats (e.g. ``optax.apply_updates``' increment).
      eigenvector: :math:`x`, a pytree like ``update``, or an ``EigResult.eigenvectors``
        stack (its first vector, the top one, is used).
      previous_update: :math:`u_{t-1}`, like ``update``, or ``None`` (cosine 0).
      preconditioner: the diagonal of :math:`P` the eigenvector was computed with, or
        ``None``.

    Returns:
      :class:`UpdateAlignment` (scalars in at least float32).

    Example:
      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> top = jnp.array([1.0, 0.0])  # the top eigenvector of diag(4, 1)
      >>> out = cc.update_alignment(jnp.array([-3.0, 4.0]), top,
      ...                           previous_update=jnp.array([3.0, -4.0]))
      >>> round(float(out.alignment), 4), round(float(out.cosine), 4)  # 3/5; opposite
      (0.6, -1.0)
    """
    _check_start(update, "update")
    x = _first_vector(eigenvector, update)
    u = update
    if preconditioner is not None:
        p = _tree.match_dtypes(update, preconditioner, "preconditioner")

        def sqrt(a: jax.Array) -> jax.Array:
            ok = (a > 0) & jnp.isfinite(a)
            return jnp.where(ok, jnp.sqrt(jnp.where(ok, a, 1.0)), 0.0)

        u = jax.tree.map(lambda a, b: sqrt(a) * b, p, update)
    dtype = _scalar_dtype(update)
    alignment = jnp.abs(_cosine(u, x)).astype(dtype)
    if previous_update is None:
        return UpdateAlignment(alignment, jnp.zeros((), dtype))
    previous = _tree.match_dtypes(update, previous_update, "previous_update")
    return UpdateAlignment(alignment, _cosine(update, previous).astype(dtype))
