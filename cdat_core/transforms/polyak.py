r"""The Polyak step size, eq (14) of Roulet et al. (2024).

:class:`ScaleByPolyakState` and :func:`scale_by_polyak`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core import _tree
from cdat_core.rules import polyak_learning_rate
from cdat_core.transforms._common import (
    PyTree,
    _all_finite,
    _check_has_aux,
    _check_hyperparameter,
    _check_params,
    _scalar_dtype,
    _scaled,
    _value_and_grad,
)

__all__ = ["ScaleByPolyakState", "scale_by_polyak"]


class ScaleByPolyakState(NamedTuple):
    r"""State of :func:`scale_by_polyak`.

    Attributes:
      learning_rate: the learning rate of the last update.
      value: :math:`f(w_t)` at the last update.
      grad_sq_norm: :math:`\|\nabla f(w_t)\|^2` at the last update.
      finite: whether the last update's value, gradient, direction, params and
        hyperparameters were finite (when not, the update was exactly zero and
        ``learning_rate`` records 0).
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad_sq_norm: jax.Array
    finite: jax.Array
    num_updates: jax.Array


def scale_by_polyak(
    *,
    f_star: float | jax.Array = 0.0,
    max_learning_rate: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
    has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the direction by the Polyak step size, eq (14) of the paper.

    .. math::

        \eta_t = \min\left\{\frac{\max(f(w_t) - f^\star, 0)}{\|\nabla f(w_t)\|^2
        + \varepsilon}, \eta_{\max}\right\},

    (:func:`cdat_core.polyak_learning_rate`) and the update is :math:`\eta_t u_t`. With
    ``optax.sgd(1.0)`` before it this is ``optax.polyak_sgd``. :math:`f(w)` and
    :math:`\nabla f(w)` are taken from the extra arguments ``value`` and ``grad`` when both
    are given (optax's ``polyak_sgd`` calling convention; ``value_fn`` is then not needed),
    else computed from ``value_fn``. ``value`` must be a scalar.

    *Bad input.* A non-finite value, gradient, direction or param gives :math:`\eta_t = 0` and
    an exactly zero update, recorded as ``finite=False``. Concrete hyperparameters (Python
    numbers, or arrays outside ``jit``) are checked here (``ValueError`` naming the argument);
    traced ones are sanitised at each step: a negative ``eps`` counts as 0, a negative
    ``max_learning_rate`` gives :math:`\eta_t = 0`, and a NaN or infinite one
    (``max_learning_rate`` may be ``+inf``) gives a zero update with ``finite=False``. The state
    holds nothing that a bad step could poison.

    Args:
      f_star: :math:`f^\star`, a finite lower bound on the objective (0 in the paper).
      max_learning_rate: :math:`\eta_{\max} \ge 0` (1 or 100 in the paper; ``inf``
        allowed).
      eps: :math:`\varepsilon \ge 0`.
      has_aux: a Python bool: whether ``value_fn`` returns ``(loss, aux)``; the loss is used,
        ``aux`` dropped. With ``value`` and ``grad`` given, ``value_fn`` is not called (see
        :mod:`cdat_core.transforms`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`ScaleByPolyakState`.

    Raises:
      ValueError: a concrete hyperparameter out of range, e.g. ``eps=-1.0``.
      TypeError: ``has_aux`` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: jnp.sum(w ** 2)
      >>> opt = optax.chain(optax.sgd(1.0), cc.scale_by_polyak())
      >>> w = jnp.ones(2); state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      >>> float(optax.tree.get(state, "learning_rate"))  # f / ‖g‖² = 2 / 8
      0.25

      Like ``optax.polyak_sgd``, it can be fed :math:`f(w)` and :math:`\nabla f(w)` only:

      >>> g = jax.grad(loss)(w)
      >>> updates, _ = cc.scale_by_polyak().update(-g, state[1], w, value=loss(w), grad=g)
      >>> updates
      Array([-0.5, -0.5], dtype=float32)
    """
    name = "scale_by_polyak"
    has_aux = _check_has_aux(name, has_aux)
    _check_hyperparameter(name, "f_star", f_star, low=None)
    _check_hyperparameter(name, "max_learning_rate", max_learning_rate, allow_inf=True)
    _check_hyperparameter(name, "eps", eps)

    def init_fn(params: PyTree) -> ScaleByPolyakState:
        dtype = _scalar_dtype(params)
        zero = jnp.zeros((), dtype)
        return ScaleByPolyakState(zero, zero, zero, jnp.asarray(True), jnp.zeros((), jnp.int32))

    def update_fn(
        updates: PyTree,
        state: ScaleByPolyakState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        value: Any = None,
        grad: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByPolyakState]:
        params, updates = _check_params(params, updates, name)
        _, value, grad = _value_and_grad(
            value_fn, extra_args, params, value, grad, name, need_objective=False, has_aux=has_aux
        )
        dtype = state.learning_rate.dtype
        value = value.astype(dtype)
        grad_sq_norm = _tree.sq_norm(grad).astype(dtype)
        f_star_, max_lr, eps_ = (
            jnp.asarray(x).astype(dtype) for x in (f_star, max_learning_rate, eps)
        )
        learning_rate = polyak_learning_rate(
            value, grad_sq_norm, f_star=f_star_, max_learning_rate=max_lr, eps=eps_
        ).astype(dtype)
        finite = _all_finite(value, grad_sq_norm, updates, params, f_star_, eps_)
        finite = finite & ~jnp.isnan(max_lr)
        learning_rate = jnp.where(finite, learning_rate, 0.0)
        new_state = ScaleByPolyakState(
            learning_rate, value, grad_sq_norm, finite, optax.safe_increment(state.num_updates)
        )
        return _scaled(learning_rate, updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
