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
from cdat_core.transforms._common import (
    PyTree,
    _all_finite,
    _check_has_aux,
    _check_hyperparameter,
    _check_params,
    _check_scalar_value,
    _objective,
    _scalar_dtype,
    _scaled,
)

__all__ = ["ScaleByHypergradientState", "scale_by_hypergradient"]


class ScaleByHypergradientState(NamedTuple):
    r"""State of :func:`scale_by_hypergradient`.

    Attributes:
      learning_rate: the learning rate :math:`\eta_t` of the last update (the initial one
        before any).
      direction: :math:`u_{t-1}`, the previous direction (zeros before any update).
      finite: whether the last update's value, gradient, direction, params, hyperparameters
        and learning rate were finite (when not, the update was exactly zero,
        ``learning_rate`` records 0, ``direction`` was kept and the next step restarts from
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
    has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Hyper-gradient descent on the learning rate, eq (15) of Roulet et al. (2024).

    .. math::

        \eta_{t} = \eta_{t-1}\left(1 - \beta\,
            \frac{\nabla f(w_t)^\top u_{t-1}}{\|\nabla f(w_t)\|\,\|u_{t-1}\|}\right),

    where :math:`w_t = w_{t-1} + \eta_{t-1} u_{t-1}`, so :math:`\nabla f(w_t)` is the
    "next gradient" :math:`\nabla f(w_{t-1} + \eta_{t-1} u_{t-1})` of eq (15), and the update
    is :math:`\eta_t u_t`. The first step uses :math:`\eta_0` = ``initial_learning_rate``.
    The gradient :math:`\nabla f(w_t)` and the value :math:`f(w_t)` are taken from the extra
    arguments ``grad`` and ``value`` when the caller passes them (free: the loop has them),
    else computed from ``value_fn`` (with ``grad`` given and ``value`` not, one forward pass
    of ``value_fn`` checks the value; without ``value_fn`` the value is not checked). Defined
    values follow :func:`cdat_core.hypergradient_learning_rate`.

    *Bad input.* A non-finite value, gradient, direction or param gives an exactly zero update,
    recorded as ``finite=False`` and learning rate 0; the next step restarts from :math:`\eta_0`
    (a multiplicative rule would otherwise stay at 0 for ever). Concrete hyperparameters (Python
    numbers, or arrays outside ``jit``) are checked here (``ValueError`` naming the argument);
    traced ones are sanitised at each step: a negative ``beta`` counts as 0, a negative
    ``initial_learning_rate`` gives a zero step (and a restart from :math:`\eta_0` at the next
    one), and a NaN or infinite one gives a zero update with ``finite=False``.

    Args:
      beta: the hyper learning rate :math:`\beta \ge 0` (the paper's grid: 1e-3 to 1).
      initial_learning_rate: :math:`\eta_0 \ge 0`.
      has_aux: a Python bool: whether ``value_fn`` returns ``(loss, aux)``; the loss is used,
        ``aux`` dropped. With ``value`` and ``grad`` given, ``value_fn`` is not called (see
        :mod:`cdat_core.transforms`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByHypergradientState`.

    Raises:
      ValueError: a concrete hyperparameter out of range, e.g.
        ``initial_learning_rate=-1.0`` (which would be an ascent step).
      TypeError: ``has_aux`` not a bool.

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
    name = "scale_by_hypergradient"
    has_aux = _check_has_aux(name, has_aux)
    _check_hyperparameter(name, "beta", beta)
    _check_hyperparameter(name, "initial_learning_rate", initial_learning_rate)

    def _initial(dtype: Any) -> jax.Array:
        eta0 = jnp.asarray(initial_learning_rate).astype(dtype)
        return jnp.where(jnp.isfinite(eta0), jnp.maximum(eta0, 0.0), 0.0)

    def init_fn(params: PyTree) -> ScaleByHypergradientState:
        dtype = _scalar_dtype(params)
        return ScaleByHypergradientState(
            learning_rate=_initial(dtype),
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
        value: Any = None,
        grad: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByHypergradientState]:
        params, updates = _check_params(params, updates, name)
        if grad is None:
            fun = _objective(value_fn, extra_args, name, has_aux)
            value, grad = jax.value_and_grad(fun)(params)
        elif value is None and value_fn is not None:
            value = _objective(value_fn, extra_args, name, has_aux)(params)
        if value is not None:
            value = _check_scalar_value(value)
        grad = _tree.match_dtypes(params, grad, "grad")
        dtype = state.learning_rate.dtype
        beta_, eta0 = (jnp.asarray(x).astype(dtype) for x in (beta, initial_learning_rate))
        inputs_finite = _all_finite(value, grad, updates, params, beta_, eta0)
        adapted = hypergradient_learning_rate(
            state.learning_rate, grad, state.direction, beta=jnp.maximum(beta_, 0.0)
        ).astype(dtype)
        # First step, or the last step was dropped (learning rate 0): start from η₀.
        restart = (state.num_updates == 0) | (state.learning_rate <= 0)
        learning_rate = jnp.where(restart, _initial(dtype), adapted)
        finite = inputs_finite & jnp.isfinite(learning_rate)
        new_state = ScaleByHypergradientState(
            learning_rate=jnp.where(finite, learning_rate, 0.0),
            direction=_tree.where(finite, updates, state.direction),
            finite=finite,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(jnp.where(finite, learning_rate, 0.0), updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
