r"""Hyper-gradient descent on the learning rate, eq (15) of Roulet et al. (2024).

:class:`ScaleByHypergradientState` and :func:`scale_by_hypergradient`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core import _tree
from cdat_core.rules import hypergradient_learning_rate
from cdat_core.transforms._common import PyTree, _check_params, _objective, _scalar_dtype, _scaled

__all__ = ["ScaleByHypergradientState", "scale_by_hypergradient"]


class ScaleByHypergradientState(NamedTuple):
    r"""State of :func:`scale_by_hypergradient`.

    Attributes:
      learning_rate: the learning rate :math:`\eta_t` of the last update (the initial one
        before any).
      direction: :math:`u_{t-1}`, the previous direction (zeros before any update).
      finite: whether the last update's direction and learning rate were finite (when not,
        the update was zero, ``learning_rate`` records 0 and the next step restarts from
        ``initial_learning_rate``).
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    direction: PyTree
    finite: jax.Array
    num_updates: jax.Array


def scale_by_hypergradient(
    beta: float | jax.Array,
    *,
    initial_learning_rate: float | jax.Array = 1e-2,
) -> optax.GradientTransformationExtraArgs:
    r"""Hyper-gradient descent on the learning rate, eq (15) of Roulet et al. (2024).

    .. math::

        \eta_{t} = \eta_{t-1}\left(1 - \beta\,
            \frac{\nabla f(w_t)^\top u_{t-1}}{\|\nabla f(w_t)\|\,\|u_{t-1}\|}\right),

    where :math:`w_t = w_{t-1} + \eta_{t-1} u_{t-1}`, so :math:`\nabla f(w_t)` is the
    "next gradient" :math:`\nabla f(w_{t-1} + \eta_{t-1} u_{t-1})` of eq (15), and the update
    is :math:`\eta_t u_t`. The first step uses :math:`\eta_0` = ``initial_learning_rate``.
    The gradient :math:`\nabla f(w_t)` is taken from the extra argument ``grad`` when the
    caller passes it (free: the loop has it), else computed from ``value_fn``. Defined
    values follow :func:`cdat_core.hypergradient_learning_rate`; a non-finite direction gives
    a zero update, recorded as learning rate 0, and the next step restarts from
    :math:`\eta_0` (a multiplicative rule would otherwise stay at 0 for ever).

    Args:
      beta: the hyper learning rate :math:`\beta` (the paper's grid: 1e-3 to 1).
      initial_learning_rate: :math:`\eta_0`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByHypergradientState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: 0.5 * jnp.sum(w ** 2)
      >>> tuner = cc.scale_by_hypergradient(0.1, initial_learning_rate=0.1)
      >>> opt = optax.chain(optax.sgd(1.0), tuner)
      >>> w = jnp.ones(2); state = opt.init(w)
      >>> for _ in range(3):
      ...     g = jax.grad(loss)(w)
      ...     updates, state = opt.update(g, state, w, value_fn=loss, grad=g)
      ...     w = optax.apply_updates(w, updates)
      >>> bool(state[1].learning_rate > 0.1)  # the gradient kept pointing the same way
      True
    """

    def init_fn(params: PyTree) -> ScaleByHypergradientState:
        dtype = _scalar_dtype(params)
        return ScaleByHypergradientState(
            learning_rate=jnp.asarray(initial_learning_rate).astype(dtype),
            direction=_tree.zeros_like(params),
            finite=jnp.asarray(True),
            num_updates=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByHypergradientState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        grad: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByHypergradientState]:
        _check_params(params, updates, "scale_by_hypergradient")
        if grad is None:
            grad = jax.grad(_objective(value_fn, extra_args, "scale_by_hypergradient"))(params)
        grad = _tree.match_dtypes(params, grad, "grad")
        dtype = state.learning_rate.dtype
        initial = jnp.asarray(initial_learning_rate).astype(dtype)
        adapted = hypergradient_learning_rate(
            state.learning_rate, grad, state.direction, beta=beta
        ).astype(dtype)
        # First step, or the last step was dropped (learning rate 0): start from η₀.
        restart = (state.num_updates == 0) | (state.learning_rate <= 0)
        learning_rate = jnp.where(restart, initial, adapted)
        finite = _tree.all_finite(updates) & jnp.isfinite(learning_rate)
        new_state = ScaleByHypergradientState(
            learning_rate=jnp.where(finite, learning_rate, 0.0),
            direction=_tree.where(finite, updates, state.direction),
            finite=finite,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(learning_rate, updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
