r"""Backtracking linesearch along the direction, eq (1) and Appendix C.3 of Roulet et al.

:class:`ScaleByLinesearchState` and :func:`scale_by_linesearch`, built on
:func:`cdat_core.backtracking_linesearch` and :func:`cdat_core.initial_learning_rate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core import _tree
from cdat_core.linesearch import backtracking_linesearch, initial_learning_rate
from cdat_core.transforms._common import (
    PyTree,
    _check_params,
    _scalar_dtype,
    _scaled,
    _value_and_grad,
)

__all__ = ["ScaleByLinesearchState", "scale_by_linesearch"]


class ScaleByLinesearchState(NamedTuple):
    r"""State of :func:`scale_by_linesearch`.

    Attributes:
      learning_rate: the learning rate accepted at the last update (0 when the search
        failed: the update was zero and the next search restarts from the maximum).
      value: :math:`f(w_t)` at the last update.
      slope: :math:`\nabla f(w_t)^\top u_t` at the last update.
      num_steps: evaluations of the objective made by the last search.
      accepted: whether the last search accepted a step.
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    value: jax.Array
    slope: jax.Array
    num_steps: jax.Array
    accepted: jax.Array
    num_updates: jax.Array


def scale_by_linesearch(
    *,
    c: float | jax.Array = 0.0,
    delta: float | jax.Array = 0.0,
    decrease_factor: float | jax.Array = 0.8,
    increase_factor: float | jax.Array = float("inf"),
    max_learning_rate: float | jax.Array = 1.0,
    max_steps: int = 30,
) -> optax.GradientTransformationExtraArgs:
    r"""Backtracking linesearch along the direction, eq (1) and Appendix C.3 of the paper.

    Each update searches :math:`\eta = c_-^k \eta_{t,0}`, :math:`k < ` ``max_steps``, from
    :math:`\eta_{t,0} = \min\{c_+ \eta_{t-1}, \eta_{\max}\}`, for the first with

    .. math:: f(w + \eta u) \le f(w) + \delta |f(w)| + c\,\eta\,\nabla f(w)^\top u

    (see :func:`cdat_core.backtracking_linesearch`), and returns :math:`\eta u`. A failed
    search (nothing accepted, ascent direction, non-finite value) gives an exactly zero
    update, and the next search restarts from :math:`\eta_{\max}`
    (:func:`cdat_core.initial_learning_rate`). :math:`f(w)` and :math:`\nabla f(w)` are
    taken from the extra arguments ``value`` and ``grad`` when the caller passes them, else
    computed from ``value_fn``.

    Args:
      c: :math:`c`, the sufficient-decrease constant (paper's grid: 0, 1e-4, 0.5).
      delta: :math:`\delta`, the relative decrease allowed (0 or 1e-3, only with c = 0).
      decrease_factor: :math:`c_-` (0.8 or 0.9).
      increase_factor: :math:`c_+` (4 or ``inf``).
      max_learning_rate: :math:`\eta_{\max}` (1 in the paper).
      max_steps: the number of trials per search (structural).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByLinesearchState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: jnp.sum(w ** 2)
      >>> opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(c=0.5, decrease_factor=0.5))
      >>> w = jnp.ones(2); state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      >>> float(optax.tree.get(state, "learning_rate")), w + updates
      (0.5, Array([0., 0.], dtype=float32))
    """

    def init_fn(params: PyTree) -> ScaleByLinesearchState:
        dtype = _scalar_dtype(params)
        return ScaleByLinesearchState(
            learning_rate=jnp.zeros((), dtype),  # 0: the first search starts from the max
            value=jnp.zeros((), dtype),
            slope=jnp.zeros((), dtype),
            num_steps=jnp.zeros((), jnp.int32),
            accepted=jnp.asarray(True),
            num_updates=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByLinesearchState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        value: Any = None,
        grad: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByLinesearchState]:
        _check_params(params, updates, "scale_by_linesearch")
        fun, value, grad = _value_and_grad(
            value_fn, extra_args, params, value, grad, "scale_by_linesearch"
        )
        dtype = state.learning_rate.dtype
        slope = _tree.vdot(grad, updates).astype(dtype)
        guess = initial_learning_rate(
            state.learning_rate,
            increase_factor=increase_factor,
            max_learning_rate=max_learning_rate,
        )
        result = backtracking_linesearch(
            fun,
            params,
            updates,
            value=value,
            slope=slope,
            initial_learning_rate=guess,
            c=c,
            delta=delta,
            decrease_factor=decrease_factor,
            max_steps=max_steps,
        )
        learning_rate = result.learning_rate.astype(dtype)
        take = result.accepted & _tree.all_finite(updates)
        learning_rate = jnp.where(take, learning_rate, 0.0)
        new_state = ScaleByLinesearchState(
            learning_rate=learning_rate,
            value=value.astype(dtype),
            slope=slope,
            num_steps=result.num_steps,
            accepted=result.accepted,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(learning_rate, updates, take), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
