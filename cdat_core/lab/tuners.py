r"""The tuners the lab compares: the :data:`TUNERS` registry, and the C.3 selection rule.

A *tuner* sets the learning rate :math:`\eta_t` that scales a base optimizer's direction
:math:`u_t` (the updates of a :data:`~cdat_core.lab.bases.BASES` optimizer at learning rate
1). Each :class:`TunerSpec` holds the tuner's rule (with the paper's equation), its traced
numbers with their defaults (the paper's where it gives one), its structural settings, the
label of its runs in the report, and the builder of its optax transformation; ``cdat-core
list`` prints the registry. To add a tuner, register one :class:`TunerSpec` below.

:func:`factory` returns ``hyperparams -> transformation`` (cached, so the lab's
:func:`~cdat_core.lab.train.sweep` compiles once per tuner and base and runs a whole grid in
one program); :func:`make` builds one transformation from Python numbers; :func:`select_best`
is the selection rule of appendix C.3 and :func:`grid` its learning-rate grid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from cdat_core.lab.bases import BASES, preconditioner
from cdat_core.lab.registry import FieldView, Registry
from cdat_core.lab.schedules import (
    ScaleByScheduledLearningRateState,
    scale_by_scheduled_learning_rate,
)
from cdat_core.lab.train import History, last_iterates_loss
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
    "TunerSpec",
    "factory",
    "grid",
    "make",
    "preconditioner",
    "scale_by_scheduled_learning_rate",
    "select_best",
]

Numbers = Mapping[str, Any]


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True, eq=False)
class TunerSpec:
    r"""A tuner: its rule, its numbers, and how to build it.

    Attributes:
      name: its name in :data:`TUNERS`.
      rule: the learning rate it sets, with the paper's equation.
      build: ``(numbers, static) -> optax transformation`` that scales the direction
        :math:`u_t`; ``numbers`` holds the keys of ``defaults`` (traced, possibly batched
        under ``vmap``), ``static`` those of ``static`` (Python values).
      defaults: traced numbers and their defaults; a sweep varies them without recompiling.
      static: structural settings and their defaults (``None``: required, no default);
        each distinct value compiles its own program.
      label: ``(symbol, number, format)`` of the run's label in the report, e.g.
        ``("σ", "sigma", "g")`` for ``"cdat σ=2"``.
      label_name: the tuner's name in labels (default ``name``; ``greedy`` runs are
        labelled as ``cdat`` runs).
      designates: name -> numbers: a run of a grid of this tuner with these numbers is
        also the report's ``selected[name]`` (CDAT's σ=1 run is the greedy tuner's).
      vectorize: its runs may be batched with ``vmap``; ``False`` for a step that batches
        poorly: its lanes then run one after the other on each device (see
        :func:`cdat_core.lab.train.run_lanes`). Under ``vmap`` a loop runs until its
        slowest lane stops and both branches of a ``lax.cond`` run: the sharpness rule's
        Lanczos (whose per-lane loop counter also turns basis reads and writes into gathers
        and scatters), the linesearch's backtracking (one after the other: 29 s instead of
        39 s for the full budget's 10 GD runs of 1000 steps), and the refresh test of
        CDAT with ``every`` > 1 (9.5 s instead of 15.3 s for 5 runs of 1000 steps).
    """

    name: str
    rule: str
    build: Callable[[Numbers, Numbers], optax.GradientTransformation]
    defaults: Numbers
    label: tuple[str, str, str]
    static: Numbers = dataclasses.field(default_factory=dict)
    label_name: str = ""
    designates: Mapping[str, Numbers] = dataclasses.field(default_factory=dict)
    vectorize: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", _frozen(self.defaults))
        object.__setattr__(self, "static", _frozen(self.static))
        designates = {k: _frozen(v) for k, v in self.designates.items()}
        object.__setattr__(self, "designates", _frozen(designates))
        if self.label[1] not in self.defaults:
            raise ValueError(f"tuner {self.name!r}: label number {self.label[1]!r} not in defaults")

    def run_label(self, numbers: Numbers) -> str:
        """The run's name in the report, e.g. ``"cdat σ=2"`` or ``"constant η=0.0462"``."""
        symbol, key, fmt = self.label
        return f"{self.label_name or self.name} {symbol}={format(numbers[key], fmt)}"


#: The tuners, by name (iterating gives the names, in registration order).
TUNERS: Registry[TunerSpec] = Registry("tuner")


def _constant(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    return scale_by_scheduled_learning_rate(hp["learning_rate"])


TUNERS.register(
    TunerSpec(
        "constant",
        "η, tuned on a grid (appendix C.3)",
        _constant,
        {"learning_rate": 1e-2},
        ("η", "learning_rate", ".3g"),
    )
)


def _warmup_cosine(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    num_steps = int(static["num_steps"])
    warmup = max(1, round(float(static["warmup_fraction"]) * num_steps))
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


TUNERS.register(
    TunerSpec(
        "warmup_cosine",
        "linear warm-up over warmup_fraction of num_steps, then cosine decay to 0",
        _warmup_cosine,
        {"peak_learning_rate": 1e-2},
        ("peak", "peak_learning_rate", ".3g"),
        static={"num_steps": None, "warmup_fraction": 0.1},
    )
)


def _linesearch(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    return scale_by_linesearch(
        c=hp["c"],
        delta=hp["delta"],
        decrease_factor=hp["decrease_factor"],
        increase_factor=hp["increase_factor"],
        max_steps=int(static["max_steps"]),
    )


TUNERS.register(
    TunerSpec(
        "linesearch",
        "backtracking, eq (1) and appendix C.3",
        _linesearch,
        # Appendix C.3 grid point c = 1e-4 (Armijo), c₋ = 0.8, c₊ = 4 (restart at 4x the last η).
        {"c": 1e-4, "delta": 0.0, "decrease_factor": 0.8, "increase_factor": 4.0},
        ("c", "c", "g"),
        static={"max_steps": 30},
        vectorize=False,
    )
)


def _cdat(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    return scale_by_cdat(hp["sigma"], ema_decay=hp["ema_decay"])


TUNERS.register(
    TunerSpec(
        "greedy",
        "CDAT with σ = 1, eq (3)",
        _cdat,
        {"sigma": 1.0, "ema_decay": 0.0},
        ("σ", "sigma", "g"),
        label_name="cdat",
    )
)
TUNERS.register(
    TunerSpec(
        "cdat",
        "CDAT, eq (8)",
        _cdat,
        {"sigma": 2.0, "ema_decay": 0.0},
        ("σ", "sigma", "g"),
        designates={"greedy": {"sigma": 1.0}, "cdat": {"sigma": 2.0}},
    )
)


def _cdat_estimated(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    return scale_by_cdat(
        hp["sigma"],
        ema_decay=hp["ema_decay"],
        curvature=static["curvature"],
        every=int(static["every"]),
    )


# Cheap CDAT (issue 15, claims C7 and C8; see cdat_core.lab.cheap_cdat): one tuner per
# estimator, so that their runs have labels of their own beside exact CDAT's.
for _name, _rule, _static in (
    (
        "cdat_lagged",
        "CDAT, eq (8), curvature of the previous step's parabola (free)",
        {"curvature": "lagged", "every": 1},
    ),
    (
        "cdat_every16",
        "CDAT, eq (8), exact curvature refreshed every 16 updates",
        {"curvature": "exact", "every": 16},
    ),
):
    TUNERS.register(
        TunerSpec(
            _name,
            _rule,
            _cdat_estimated,
            {"sigma": 2.0, "ema_decay": 0.0},
            ("σ", "sigma", "g"),
            static=_static,
            vectorize=False,
        )
    )


def _polyak(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    return scale_by_polyak(max_learning_rate=hp["max_learning_rate"])


TUNERS.register(
    TunerSpec(
        "polyak",
        "Polyak step, eq (14)",
        _polyak,
        {"max_learning_rate": 1.0},
        ("η_max", "max_learning_rate", "g"),
    )
)


def _hypergradient(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    return scale_by_hypergradient(hp["beta"], initial_learning_rate=hp["initial_learning_rate"])


TUNERS.register(
    TunerSpec(
        "hypergradient",
        "hyper-gradient descent, eq (15)",
        _hypergradient,
        {"beta": 1e-2, "initial_learning_rate": 1e-2},
        ("β", "beta", "g"),
    )
)


def _sharpness(hp: Numbers, static: Numbers) -> optax.GradientTransformation:
    return scale_by_sharpness(hp["sigma"], num_iters=int(static["num_iters"]))


TUNERS.register(
    TunerSpec(
        "sharpness",
        "σ/λ_max, eq (16), λ_max by num_iters Lanczos steps",
        _sharpness,
        {"sigma": 2.0},
        ("σ", "sigma", "g"),
        static={"num_iters": 10},
        vectorize=False,
    )
)

#: Default numbers of each tuner (a live view of :data:`TUNERS`).
DEFAULTS: Mapping[str, Numbers] = FieldView(TUNERS, lambda spec: dict(spec.defaults))


@functools.lru_cache(maxsize=128)
def _factory(
    tuner: TunerSpec, base: Any, settings: tuple[tuple[str, Any], ...]
) -> Callable[[Numbers], optax.GradientTransformation]:
    static = dict(settings)

    def build(hp: Numbers) -> optax.GradientTransformation:
        return optax.chain(base.build(), tuner.build(hp, static))

    return build


def factory(
    tuner: str, base: str = "gd", **static: Any
) -> Callable[[Numbers], optax.GradientTransformation]:
    """``hyperparams -> optax transformation`` for a tuner on a base optimizer (cached).

    Args:
      tuner: a name in :data:`TUNERS`.
      base: a name in :data:`BASES`.
      **static: structural settings, the keys of ``TUNERS[tuner].static`` (e.g.
        ``num_steps`` and ``warmup_fraction`` for ``warmup_cosine``, ``max_steps`` for
        ``linesearch``, ``num_iters`` for ``sharpness``); missing ones take their defaults.

    Returns:
      A function of a dict with the keys of ``DEFAULTS[tuner]``; the same arguments give the
      same function, so compilations keyed on it are reused.

    Raises:
      ValueError: an unknown tuner, base or setting, or a required setting missing.

    Example:
      >>> from cdat_core.lab import tuners
      >>> tuners.factory("cdat", "adam") is tuners.factory("cdat", "adam")
      True
    """
    spec, base_spec = TUNERS.lookup(tuner), BASES.lookup(base)
    unknown = sorted(set(static) - set(spec.static))
    if unknown:
        raise ValueError(f"the {tuner} tuner has no settings {unknown}; it has {list(spec.static)}")
    settings = {**spec.static, **static}
    missing = [k for k, v in settings.items() if v is None]
    if missing:
        raise ValueError(f"the {tuner} tuner needs {', '.join(k + '=' for k in missing)}")
    return _factory(spec, base_spec, tuple(sorted(settings.items())))


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
    spec = TUNERS.lookup(tuner)
    unknown = set(hp) - set(spec.defaults)
    if unknown:
        raise ValueError(f"tuner {tuner!r} has no numbers {sorted(unknown)}")
    return factory(tuner, base, **(static or {}))({**spec.defaults, **hp})


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
      ``(index, inside)``, where ``inside`` is False when the best is the first or last grid
      point (the paper widens such grids; the lab reports it).

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
