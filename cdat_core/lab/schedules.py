r"""The lab's own optax transformation: a constant or scheduled :math:`\eta_t`, recorded.

:func:`scale_by_scheduled_learning_rate` is what the ``constant`` and ``warmup_cosine``
tuners of :data:`cdat_core.lab.tuners.TUNERS` are built from: unlike
``optax.scale_by_learning_rate`` it keeps :math:`\eta_t` in its state's ``learning_rate``
field, so the lab reads the step of a fixed schedule like that of any cdat_core tuner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["ScaleByScheduledLearningRateState", "scale_by_scheduled_learning_rate"]

PyTree = Any
Schedule = Callable[[jax.Array], jax.Array]


class ScaleByScheduledLearningRateState(NamedTuple):
    r"""State of :func:`scale_by_scheduled_learning_rate`.

    Attributes:
      learning_rate: :math:`\eta_t` of the last update (0 before any).
      count: number of updates made.
    """

    learning_rate: jax.Array
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax


def scale_by_scheduled_learning_rate(
    learning_rate: float | jax.Array | Schedule,
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the direction by a constant or scheduled :math:`\eta_t`, and record it.

    The update is :math:`\eta_t u_t` with :math:`\eta_t` = ``learning_rate(t)`` (a schedule)
    or ``learning_rate`` (a number), and :math:`u_t` the incoming updates (already a descent
    direction, e.g. from ``optax.sgd(1.0)``: unlike ``optax.scale_by_learning_rate`` the sign
    is not flipped). The state keeps :math:`\eta_t` in its ``learning_rate`` field, so the
    lab reads the step of a constant learning rate like that of any tuner.

    Args:
      learning_rate: a number or an optax schedule ``count -> learning rate``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` (extra arguments are ignored).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from cdat_core.lab import schedules
      >>> opt = optax.chain(optax.sgd(1.0), schedules.scale_by_scheduled_learning_rate(0.5))
      >>> updates, state = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
      >>> updates.tolist(), float(optax.tree.get(state, "learning_rate"))
      ([-1.0], 0.5)
    """

    def schedule(count: jax.Array) -> Any:
        return learning_rate(count) if callable(learning_rate) else learning_rate

    def init_fn(params: PyTree) -> ScaleByScheduledLearningRateState:
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return ScaleByScheduledLearningRateState(jnp.zeros((), dtype), jnp.zeros((), jnp.int32))

    def update_fn(
        updates: PyTree,
        state: ScaleByScheduledLearningRateState,
        params: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByScheduledLearningRateState]:
        del params, extra_args
        eta = jnp.asarray(schedule(state.count)).astype(state.learning_rate.dtype)
        updates = jax.tree.map(lambda u: eta.astype(u.dtype) * u, updates)
        return updates, ScaleByScheduledLearningRateState(eta, optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
