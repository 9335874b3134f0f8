r"""The tuners the lab compares, on the base optimizers it uses, and the C.3 selection rule.

A *tuner* sets the learning rate :math:`\eta_t` that scales a base optimizer's direction
:math:`u_t` (the updates of the base optimizer at learning rate 1). The registry:

=================  =====================================================  ==================
name               learning rate                                          numbers (traced)
=================  =====================================================  ==================
``constant``       :math:`\eta` (tuned on a grid, appendix C.3)           ``learning_rate``
``warmup_cosine``  linear warm-up then cosine decay to 0                  ``peak_learning_rate``
``linesearch``     backtracking, eq (1) and appendix C.3                  ``c``, ``delta``,
                                                                          ``decrease_factor``,
                                                                          ``increase_factor``
``greedy``         CDAT with :math:`\sigma = 1`, eq (3)                   ``sigma``, ``ema_decay``
``cdat``           CDAT, eq (8)                                           ``sigma``, ``ema_decay``
``polyak``         Polyak step, eq (14)                                   ``max_learning_rate``
``hypergradient``  hyper-gradient descent, eq (15)                        ``beta``,
                                                                          ``initial_learning_rate``
``sharpness``      :math:`\sigma/\lambda_{\max}`, eq (16)                 ``sigma``
=================  =====================================================  ==================

Base optimizers (appendix C.3: optax defaults): ``gd`` (``optax.sgd(1.0)``, :math:`u =
-\nabla f`), ``momentum`` (``optax.sgd(1.0, momentum=0.9)``) and ``adam`` (``optax.adam(1.0)``,
:math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.999`, :math:`\varepsilon = 10^{-8}`).

:func:`factory` returns ``hyperparams -> transformation`` (cached, so the lab's
:func:`~cdat_core.lab.train.sweep` compiles once per tuner and base and runs a whole grid in
one program); :func:`make` builds one transformation from Python numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core.lab.train import History, adam_preconditioner, last_iterates_loss
from cdat_core.transforms import (
    scale_by_cdat,
    scale_by_hypergradient,
    scale_by_linesearch,
    scale_by_polyak,
    scale_by_sharpness,
)

__all__ = [
    "BASES",
    "DEFAULTS",
    "TUNERS",
    "ScaleByScheduledLearningRateState",
    "factory",
    "grid",
    "make",
    "preconditioner",
    "scale_by_scheduled_learning_rate",
    "select_best",
]

PyTree = Any
Schedule = Callable[[jax.Array], jax.Array]

#: Base optimizers at learning rate 1 (the direction :math:`u`).
BASES: dict[str, Callable[[], optax.GradientTransformation]] = {
    "gd": lambda: optax.sgd(1.0),
    "momentum": lambda: optax.sgd(1.0, momentum=0.9),
    "adam": lambda: optax.adam(1.0, b1=0.9, b2=0.999, eps=1e-8),
}

#: Default numbers of each tuner (the paper's where it gives one).
DEFAULTS: dict[str, dict[str, float]] = {
    "constant": {"learning_rate": 1e-2},
    "warmup_cosine": {"peak_learning_rate": 1e-2},
    # Appendix C.3 grid point c = 1e-4 (Armijo), c₋ = 0.8, c₊ = 4 (restart at 4x the last η).
    "linesearch": {"c": 1e-4, "delta": 0.0, "decrease_factor": 0.8, "increase_factor": 4.0},
    "greedy": {"sigma": 1.0, "ema_decay": 0.0},
    "cdat": {"sigma": 2.0, "ema_decay": 0.0},
    "polyak": {"max_learning_rate": 1.0},
    "hypergradient": {"beta": 1e-2, "initial_learning_rate": 1e-2},
    "sharpness": {"sigma": 2.0},
}

TUNERS = tuple(DEFAULTS)


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
      >>> from cdat_core.lab import tuners
      >>> opt = optax.chain(optax.sgd(1.0), tuners.scale_by_scheduled_learning_rate(0.5))
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


def _scaling(
    tuner: str, hp: Mapping[str, Any], static: Mapping[str, Any]
) -> optax.GradientTransformation:
    if tuner == "constant":
        return scale_by_scheduled_learning_rate(hp["learning_rate"])
    if tuner == "warmup_cosine":
        num_steps = int(static["num_steps"])
        warmup = max(1, round(float(static.get("warmup_fraction", 0.1)) * num_steps))
        # The shape is built at peak 1 and scaled, so the peak may be traced (optax's
        # schedule tests ``peak_value == 0`` in Python).
        shape = optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=1.0, warmup_steps=warmup, decay_steps=num_steps
        )
        peak = hp["peak_learning_rate"]

        def schedule(count: jax.Array) -> jax.Array:
            dtype = jnp.result_type(peak)
            # a float count: optax's schedules mix it with floats (strict promotion safe)
            return peak * jnp.asarray(shape(jnp.asarray(count).astype(dtype))).astype(dtype)

        return scale_by_scheduled_learning_rate(schedule)
    if tuner == "linesearch":
        return scale_by_linesearch(
            c=hp["c"],
            delta=hp["delta"],
            decrease_factor=hp["decrease_factor"],
            increase_factor=hp["increase_factor"],
            max_steps=int(static.get("max_steps", 30)),
        )
    if tuner in ("greedy", "cdat"):
        return scale_by_cdat(hp["sigma"], ema_decay=hp["ema_decay"])
    if tuner == "polyak":
        return scale_by_polyak(max_learning_rate=hp["max_learning_rate"])
    if tuner == "hypergradient":
        return scale_by_hypergradient(hp["beta"], initial_learning_rate=hp["initial_learning_rate"])
    if tuner == "sharpness":
        return scale_by_sharpness(hp["sigma"], num_iters=int(static.get("num_iters", 10)))
    raise ValueError(f"unknown tuner {tuner!r}; choose one of {TUNERS}")


@functools.lru_cache(maxsize=128)
def _factory(
    tuner: str, base: str, static: tuple[tuple[str, Any], ...]
) -> Callable[[Mapping[str, Any]], optax.GradientTransformation]:
    if tuner not in DEFAULTS:
        raise ValueError(f"unknown tuner {tuner!r}; choose one of {TUNERS}")
    if base not in BASES:
        raise ValueError(f"unknown base optimizer {base!r}; choose one of {tuple(BASES)}")
    if tuner == "warmup_cosine" and "num_steps" not in dict(static):
        raise ValueError("the warmup_cosine tuner needs num_steps= (its horizon).")

    def build(hp: Mapping[str, Any]) -> optax.GradientTransformation:
        return optax.chain(BASES[base](), _scaling(tuner, hp, dict(static)))

    return build


def factory(
    tuner: str, base: str = "gd", **static: Any
) -> Callable[[Mapping[str, Any]], optax.GradientTransformation]:
    """``hyperparams -> optax transformation`` for a tuner on a base optimizer (cached).

    Args:
      tuner: a name in :data:`TUNERS`.
      base: a name in :data:`BASES`.
      **static: structural settings: ``num_steps`` and ``warmup_fraction`` (default 0.1)
        for ``warmup_cosine``, ``max_steps`` (30) for ``linesearch``, ``num_iters`` (10)
        for ``sharpness``.

    Returns:
      A function of a dict with the keys of ``DEFAULTS[tuner]``; the same arguments give the
      same function, so compilations keyed on it are reused.

    Example:
      >>> from cdat_core.lab import tuners
      >>> tuners.factory("cdat", "adam") is tuners.factory("cdat", "adam")
      True
    """
    return _factory(tuner, base, tuple(sorted(static.items())))


def make(tuner: str, base: str = "gd", *, static: Mapping[str, Any] | None = None, **hp: float):
    """One optax transformation: ``tuner`` on ``base`` with numbers ``hp`` (else defaults).

    Args:
      tuner: a name in :data:`TUNERS`.
      base: a name in :data:`BASES`.
      static: structural settings, see :func:`factory`.
      **hp: numbers overriding ``DEFAULTS[tuner]``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; its ``update`` needs ``value_fn``
      (and accepts ``value``, ``grad``) like the cdat_core transformations.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from cdat_core.lab import tuners
      >>> loss = lambda w: 0.5 * (4.0 * w[0] ** 2 + w[1] ** 2)
      >>> opt = tuners.make("cdat", sigma=2.0)
      >>> w = jnp.array([1.0, 0.0])  # the gradient is the top eigenvector: η = 2/λ = 0.5
      >>> _, state = opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss)
      >>> float(optax.tree.get(state, "learning_rate"))
      0.5
    """
    unknown = set(hp) - set(DEFAULTS.get(tuner, {}))
    if unknown:
        raise ValueError(f"tuner {tuner!r} has no numbers {sorted(unknown)}")
    numbers = {**DEFAULTS[tuner], **hp} if tuner in DEFAULTS else hp
    return factory(tuner, base, **(static or {}))(numbers)


def preconditioner(base: str) -> Callable[[Any], PyTree] | None:
    """The sharpness preconditioner of a base optimizer: Adam's, else ``None``.

    Args:
      base: a name in :data:`BASES`.

    Returns:
      :func:`cdat_core.lab.train.adam_preconditioner` for ``adam``, else ``None``.

    Example:
      >>> from cdat_core.lab import tuners
      >>> tuners.preconditioner("gd") is None, tuners.preconditioner("adam") is not None
      (True, True)
    """
    return adam_preconditioner(b2=0.999, eps=1e-8) if base == "adam" else None


def grid(center: float, exponents: Sequence[int]) -> list[float]:
    r"""The learning-rate grid :math:`\{c \cdot 2^i\}` of appendix C.3 (log base 2).

    Args:
      center: :math:`c`.
      exponents: the :math:`i`.

    Returns:
      The grid, in the order of ``exponents``.

    Example:
      >>> from cdat_core.lab import tuners
      >>> tuners.grid(0.1, [-1, 0, 1])
      [0.05, 0.1, 0.2]
    """
    return [float(center) * math.ldexp(1.0, int(i)) for i in exponents]


def select_best(histories: Sequence[History], last: int = 5) -> tuple[int, bool]:
    """Index of the best run by the mean loss of its last ``last`` iterates (appendix C.3).

    Args:
      histories: runs of one grid, in grid order.
      last: iterates averaged (5 in the paper).

    Returns:
      ``(index, inside)``: ``inside`` is False when the best is the first or last grid point
      (the paper widens such grids; the lab reports it).

    Example:
      >>> import numpy as np
      >>> from cdat_core.lab import train, tuners
      >>> def run(final):
      ...     return train.History(np.full(8, final), *([np.zeros(8)] * 2), {},
      ...                          *([np.zeros(0)] * 5), False, 0.0, 0.0)
      >>> tuners.select_best([run(3.0), run(1.0), run(np.nan)])
      (1, True)
    """
    if not histories:
        raise ValueError("select_best needs at least one run.")
    scores = [last_iterates_loss(h, last) for h in histories]
    best = min(range(len(scores)), key=scores.__getitem__)
    return best, 0 < best < len(scores) - 1
