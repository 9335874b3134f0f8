r"""Directional curvature, Hessian-vector products and Gauss-Newton curvature.

All three take ``fun(params, *args) -> scalar`` (or ``predict``/``loss`` for Gauss-Newton)
and pytrees of float arrays for ``params`` and the direction; ``None`` leaves are empty
subtrees. They check their inputs at trace time: a direction whose structure or shapes differ
from ``params`` raises ``ValueError`` naming both, integer params and a non-scalar objective
raise ``TypeError``. A direction is cast to the dtypes of ``params`` (JVP tangents must match
their primals).

The curvature :math:`u^\top \nabla^2 f(w) u = \partial^2 f(w)[u, u]` is computed as a JVP of a
JVP (forward over forward, Appendix C.3 of Roulet et al., 2024), which needs no reverse pass
and so stores no activations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cdat_core import _tree

__all__ = ["Curvature", "directional_curvature", "gauss_newton_curvature", "hvp"]

PyTree = Any


class Curvature(NamedTuple):
    r"""Value, slope and curvature of an objective along a direction :math:`u`.

    Attributes:
      value: :math:`f(w)`.
      slope: :math:`\nabla f(w)^\top u`.
      curvature: :math:`u^\top \nabla^2 f(w) u` (or its Gauss-Newton approximation).

    """

    value: jax.Array
    slope: jax.Array
    curvature: jax.Array


def directional_curvature(
    fun: Callable[..., Any], params: PyTree, direction: PyTree, *args: Any
) -> Curvature:
    r"""Value, slope and curvature of ``fun`` along ``direction`` by forward-over-forward.

    With :math:`\phi(t) = f(w + t u)`, returns :math:`\phi(0) = f(w)`,
    :math:`\phi'(0) = \nabla f(w)^\top u` and :math:`\phi''(0) = u^\top \nabla^2 f(w) u`, from a
    single traced computation: a JVP of the JVP of ``fun``. No reverse-mode pass is made, so
    the memory is that of a few forward passes (the paper's ~3x the objective).

    Args:
      fun: ``fun(params, *args)`` returning a real scalar.
      params: :math:`w`, a pytree of float arrays.
      direction: :math:`u`, a pytree with the structure and shapes of ``params``.
      *args: extra positional arguments passed to ``fun`` (data, targets, ...); not
        differentiated.

    Returns:
      ``Curvature(value, slope, curvature)``, scalars in the dtype ``fun`` returns.

    Example:
      On :math:`f(w) = \tfrac12 w^\top A w + b^\top w` the three numbers have closed forms:

      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> A = jnp.array([[2.0, 0.0], [0.0, 4.0]]); b = jnp.array([1.0, -1.0])
      >>> f = lambda w: 0.5 * w @ A @ w + b @ w
      >>> w, u = jnp.array([1.0, 1.0]), jnp.array([1.0, 0.5])
      >>> value, slope, curv = cc.directional_curvature(f, w, u)
      >>> float(value), float(slope), float(curv)  # f(w), (Aw + b)ᵀu, uᵀAu
      (3.0, 4.5, 3.0)

    """
    direction = _tree.match_dtypes(params, direction, "direction")
    objective = _tree.scalar_output(lambda w: fun(w, *args))

    def value_and_slope(w: PyTree) -> tuple[jax.Array, jax.Array]:
        return jax.jvp(objective, (w,), (direction,))

    (value, slope), (_, curvature) = jax.jvp(value_and_slope, (params,), (direction,))
    return Curvature(value, slope, curvature)


def hvp(fun: Callable[..., Any], params: PyTree, vector: PyTree, *args: Any) -> PyTree:
    r"""Hessian-vector product :math:`\nabla^2 f(w) v` by forward-over-reverse.

    Args:
      fun: ``fun(params, *args)`` returning a real scalar.
      params: :math:`w`, a pytree of float arrays.
      vector: :math:`v`, a pytree with the structure and shapes of ``params``.
      *args: extra positional arguments passed to ``fun``; not differentiated.

    Returns:
      :math:`\nabla^2 f(w) v`, a pytree with the structure, shapes and dtypes of ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
      >>> f = lambda w: 0.5 * w @ A @ w
      >>> cc.hvp(f, jnp.zeros(2), jnp.array([1.0, 0.0])).tolist()
      [2.0, 1.0]

    """
    vector = _tree.match_dtypes(params, vector, "vector")
    objective = _tree.scalar_output(lambda w: fun(w, *args))
    _, out = jax.jvp(jax.grad(objective), (params,), (vector,))
    return _tree.cast_like(out, params)


def gauss_newton_curvature(
    predict: Callable[..., Any],
    loss: Callable[[Any], Any],
    params: PyTree,
    direction: PyTree,
    *args: Any,
) -> Curvature:
    r"""Gauss-Newton curvature :math:`u^\top J^\top \nabla^2 \ell\, J u` along ``direction``.

    For :math:`f(w) = \ell(m(w))` with ``predict`` :math:`m` and ``loss`` :math:`\ell`, the
    Gauss-Newton matrix :math:`G = J^\top \nabla^2 \ell\, J` (:math:`J` the Jacobian of
    :math:`m`) drops the second derivatives of :math:`m` from the Hessian. It is computed
    without any reverse pass: one JVP of ``predict`` gives :math:`m(w)` and :math:`J u`, then
    :func:`directional_curvature` of ``loss`` at :math:`m(w)` along :math:`J u` gives
    :math:`\ell`, :math:`\nabla \ell^\top J u = \nabla f(w)^\top u` and
    :math:`(Ju)^\top \nabla^2 \ell\, (Ju)`.

    :math:`G` is positive semi-definite when :math:`\ell` is convex in the outputs (squared
    loss, softmax cross-entropy); the returned curvature is clipped at 0 so rounding never
    makes it negative. For a non-convex :math:`\ell` the clipping hides negative curvature:
    use :func:`directional_curvature` there.

    Args:
      predict: ``predict(params, *args)`` returning the model outputs (any pytree of floats).
      loss: ``loss(outputs)`` returning a real scalar (close over the targets).
      params: :math:`w`.
      direction: :math:`u`, with the structure and shapes of ``params``.
      *args: extra positional arguments passed to ``predict``.

    Returns:
      ``Curvature(value, slope, curvature)`` with ``value`` :math:`f(w)`, ``slope``
      :math:`\nabla f(w)^\top u` and ``curvature`` :math:`u^\top G u \ge 0`.

    Example:
      For a linear model with squared loss the Gauss-Newton matrix is the Hessian:

      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> X = jnp.array([[1.0, 2.0], [0.0, 1.0]]); y = jnp.array([1.0, 0.0])
      >>> predict = lambda w, X: X @ w
      >>> loss = lambda out: 0.5 * jnp.sum((out - y) ** 2)
      >>> gn = cc.gauss_newton_curvature(predict, loss, jnp.zeros(2), jnp.ones(2), X)
      >>> float(gn.curvature)  # uᵀXᵀXu = 3² + 1²
      10.0

    """
    direction = _tree.match_dtypes(params, direction, "direction")
    outputs, output_tangent = jax.jvp(lambda w: predict(w, *args), (params,), (direction,))
    _tree.check_float_tree(outputs, "predict(params, *args)")
    value, slope, curvature = directional_curvature(
        _tree.scalar_output(lambda out: loss(out), "loss"), outputs, output_tangent
    )
    return Curvature(value, slope, jnp.maximum(curvature, jnp.zeros_like(curvature)))
