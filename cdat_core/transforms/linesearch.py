r"""Backtracking linesearch along the direction, eq (1) and Appendix C.3 of Roulet et al.

:class:`ScaleByLinesearchState` and :func:`scale_by_linesearch`, built on
:func:`cdat_core.backtracking_linesearch` and :func:`cdat_core.initial_learning_rate`
(whose continuation rule keeps a full-batch search from stalling after a failure).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core import _tree
from cdat_core.linesearch import (
    _check_hyperparameters,
    backtracking_linesearch,
    initial_learning_rate,
)
from cdat_core.transforms._common import (
    PyTree,
    _check_has_aux,
    _check_params,
    _scalar_dtype,
    _scaled,
    _value_and_grad,
)

__all__ = ["ScaleByLinesearchState", "scale_by_linesearch"]


class ScaleByLinesearchState(NamedTuple):
    r"""State of :func:`scale_by_linesearch`.

    Attributes:
      learning_rate: the learning rate taken at the last update: the accepted
        :math:`\eta_t`, or 0 when the search failed (the update was then exactly zero).
      value: :math:`f(w_t)` at the last update.
      slope: :math:`\nabla f(w_t)^\top u_t` at the last update.
      num_steps: evaluations of the objective made by the last search (0 when it did not
        start: ascent or flat direction, non-finite value, slope or direction).
      accepted: whether the last update took a step.
      smallest_tried: :math:`\check\eta_t`, the smallest learning rate tried by the last
        search that tried any (0 before the first); after a failure the next search starts
        from :math:`c_-\check\eta_t` (:func:`cdat_core.initial_learning_rate`).
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    value: jax.Array
    slope: jax.Array
    num_steps: jax.Array
    accepted: jax.Array
    smallest_tried: jax.Array
    num_updates: jax.Array


def scale_by_linesearch(
    *,
    c: float | jax.Array = 0.0,
    delta: float | jax.Array = 0.0,
    decrease_factor: float | jax.Array = 0.8,
    increase_factor: float | jax.Array = math.inf,
    max_learning_rate: float | jax.Array = 1.0,
    max_steps: int = 30,
    has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Backtracking linesearch along the direction, eq (1) and Appendix C.3 of the paper.

    Each update tries :math:`\eta = c_-^k \eta_{t,0}`, :math:`k = 0, \dots,` ``max_steps`` − 1,
    and takes the first with

    .. math:: f(w + \eta u) \le f(w) + \delta |f(w)| + c\,\eta\,\nabla f(w)^\top u

    (see :func:`cdat_core.backtracking_linesearch`), returning :math:`\eta u`. The search
    starts from (:func:`cdat_core.initial_learning_rate`)

    .. math::

        \eta_{t,0} = \min\{c_+\eta_{t-1}, \eta_{\max}\} \text{ after an accepted step},
        \quad \min\{c_-\check\eta_{t-1}, \eta_{\max}\} \text{ after a failed one},

    with :math:`\check\eta_{t-1}` the smallest learning rate tried so far (the first search
    starts from :math:`\eta_{\max}`). A failed search (nothing accepted within
    ``max_steps``, ascent direction, non-finite value, slope or direction) gives an exactly
    zero update (by ``where``) recorded in the state (``learning_rate`` 0, ``accepted``
    False), and the next search continues the geometric sequence below the smallest step
    tried: consecutive full-batch steps act as one search that runs until the criterion
    holds, as in the paper, so a too-small ``max_steps`` costs steps but never stalls for
    ever. (optax's ``scale_by_backtracking_linesearch`` steps with its last rejected
    learning rate instead, which can be an ascent step.) :math:`f(w)` and
    :math:`\nabla f(w)` are taken from the extra arguments ``value`` and ``grad`` when the
    caller passes them, else computed from ``value_fn``.

    Args:
      c: :math:`c \ge 0`, the sufficient-decrease constant (paper's grid: 0, 1e-4, 0.5).
      delta: :math:`\delta \ge 0`, the relative decrease allowed (0 or 1e-3, with c = 0).
      decrease_factor: :math:`c_- \in (0, 1)` (0.8 or 0.9).
      increase_factor: :math:`c_+ \ge 1` (4 or ``inf``).
      max_learning_rate: :math:`\eta_{\max} > 0`, finite (1 in the paper).
      max_steps: the number of trials per search, a Python int >= 1 (structural). 30 is
        the paper's mini-batch budget; full batch, the continuation rule above stands in for
        the paper's unbounded search.
      has_aux: a Python bool: whether ``value_fn`` returns ``(loss, aux)``. The search uses
        the loss and drops ``aux``, at ``params`` and at every trial; pass ``value=loss,
        grad=grad`` from your own ``jax.value_and_grad(value_fn, has_aux=True)``, whose
        ``aux`` is the one at the current params (see :mod:`cdat_core.transforms`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByLinesearchState`.

    Raises:
      ValueError: when the transformation is built with a concrete hyperparameter out of
        the ranges above (the message names it) or ``max_steps < 1``. Traced ones (e.g.
        through ``optax.inject_hyperparams``) are sanitised instead: an out-of-range or NaN
        :math:`c`, :math:`\delta`, :math:`c_-` or :math:`\eta_{\max}` gives learning rate 0
        and a zero update for that step only; :math:`c_+ < 1` or NaN counts as 1.
      TypeError: when ``max_steps`` is not a Python int or ``has_aux`` not a bool; at trace
        time, a ``value_fn`` that returns a tuple with ``has_aux=False`` (a ``ValueError``
        when it does not return a pair with ``has_aux=True``).

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
    name = "scale_by_linesearch"
    max_steps = _tree.check_structural_int(max_steps, "max_steps")
    has_aux = _check_has_aux(name, has_aux)
    _check_hyperparameters(
        c=c,
        delta=delta,
        decrease_factor=decrease_factor,
        increase_factor=increase_factor,
        max_learning_rate=max_learning_rate,
    )

    def init_fn(params: PyTree) -> ScaleByLinesearchState:
        dtype = _scalar_dtype(params)
        return ScaleByLinesearchState(
            learning_rate=jnp.zeros((), dtype),  # 0 and nothing tried: start from the max
            value=jnp.zeros((), dtype),
            slope=jnp.zeros((), dtype),
            num_steps=jnp.zeros((), jnp.int32),
            accepted=jnp.asarray(True),
            smallest_tried=jnp.zeros((), dtype),
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
        _check_params(params, updates, name)
        fun, value, grad = _value_and_grad(
            value_fn, extra_args, params, value, grad, name, has_aux=has_aux
        )
        assert fun is not None  # the objective is always built for a linesearch
        dtype = state.learning_rate.dtype
        slope = _tree.vdot(grad, updates).astype(dtype)
        guess = initial_learning_rate(
            state.learning_rate,
            increase_factor=increase_factor,
            max_learning_rate=max_learning_rate,
            smallest_tried=state.smallest_tried,
            decrease_factor=decrease_factor,
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
        # A NaN slope already stops the search; a non-finite direction with a finite slope
        # cannot occur, but the check keeps the zero update independent of that argument.
        take = result.accepted & _tree.all_finite(updates)
        learning_rate = jnp.where(take, result.learning_rate.astype(dtype), 0.0)
        # A search that did not start tried nothing: the pending continuation point stays.
        started = result.num_steps > 0
        smallest = jnp.where(started, result.smallest_tried.astype(dtype), state.smallest_tried)
        new_state = ScaleByLinesearchState(
            learning_rate=learning_rate,
            value=value.astype(dtype),
            slope=slope,
            num_steps=result.num_steps,
            accepted=take,
            smallest_tried=smallest,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(learning_rate, updates, take), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
