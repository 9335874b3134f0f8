r"""The verify job's budgets: what each can afford, and the plan the registered claims need.

A :class:`Plan` is a budget's experiments (a problem and a base optimizer), the sweeps run
on them (a grid of one tuner) and the measurements made. Each budget has a *catalog*
(:data:`CATALOGS`: the sizes and grids it affords); :func:`build_plan` keeps of it what the
registered claims of that budget need (:mod:`cdat_core.lab.needs`) and raises when a need is
not in the catalog. To give a new claim runs that no claim needs yet, add its sweep to the
catalogs below.

Budgets (measured on 2 shared CPU cores; see ``cdat-core verify --help``):

- ``full`` (5 seeds; 10 min 40 s on 2 idle cores, of which 7 min 43 s for the paper's
  full-batch findings and the rest for the cheap-CDAT runs and the mini-batch study; see the
  README's Results): the digits MLP 64-128-128-10 on the first 512 examples (the paper's
  full-batch experiments also use data subsets; 64-256-256-10 on all 1797 examples costs
  about 10x more per step, too much for every tuner at this budget), full batch. GD: 1000
  steps for the constant-η grid :math:`\{2^i/\lambda_0\}_{i=1}^{3}`, the
  linesearch grid (:math:`c \in \{10^{-4}, 0.5\}`, :math:`c_- = 0.8`, :math:`c_+ = 4`), CDAT
  :math:`\sigma \in \{1, 1.9375, 2, 2.0625, 2.5\}`, Polyak (:math:`\eta_{\max} \in \{1,
  100\}`), hyper-gradient (:math:`\beta \in \{10^{-2}, 10^{-1}, 1\}`) and warm-up + cosine
  (peak :math:`\{2^i/\lambda_0\}_{i=2}^{4}`); 500 steps for the exact-sharpness rule
  (:math:`\sigma \in \{2, 3\}`, 5 Lanczos steps per update). GD with momentum and Adam:
  500 steps, a constant grid (:math:`\{2^i/\lambda_0\}_{i=1}^{3}`; Adam
  :math:`\{4, 8, 16\} \cdot 10^{-3}`) and CDAT :math:`\sigma \in \{1, 2, 2.0625\}` (EMA 0.9
  with Adam). The digits CNN (second architecture): 500 steps, constant grid
  :math:`\{2^i/\lambda_0\}_{i=1}^{3}` and CDAT :math:`\sigma \in \{1, 2\}`. :math:`\lambda_0`
  is the measured initial sharpness. The grids are three points around where the best point
  fell on every seed of a 5-seed run of wider grids (:math:`i \in \{-1..4\}`, Adam
  :math:`\{0.5 .. 32\} \cdot 10^{-3}`, :math:`c \in \{0, 10^{-4}, 0.5\}`, four
  :math:`\beta`): the power-of-2 grids (constant, warm-up peak) are extended while their best
  point is at an end (appendix C.3), at most 3 times, so a seed whose best lies elsewhere
  still gets it.
- ``quick`` (< 1 min): the digits MLP 64-32-32-10 on the first 256 examples, GD only,
  300 steps (compilation dominates this budget): the constant grid
  :math:`\{2^i/\lambda_0\}_{i=0}^{3}`, linesearch (:math:`c = 10^{-4}`) and the CDAT
  :math:`\sigma` set; every claim type is evaluated (identities, findings 1-3, models,
  costs), but 300 steps are too few for the long-run findings, which may FAIL there; the
  claims of the other tuners and base optimizers are declared full-budget only (N/A here).

Sharpness is measured every ``record_every`` steps (50 full, 25 quick) with at most 20
Lanczos steps warm-started from the previous eigenvector (stopping at a relative residual of
1e-3). At the edge of stability the top eigenvalues cluster: on the full budget's MLP, 10
warm-started steps read 2.5 % low against an 80-step cold start, which 20 cold-start steps
match to 5 digits.

Both budgets also carry a mini-batch study (``Plan.minibatch``, the ``minibatch``
measurement: :data:`cdat_core.lab.minibatch.STUDIES`, a reduced one for ``quick``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from cdat_core.lab.bases import BASES
from cdat_core.lab.cheap_cdat import ESTIMATORS
from cdat_core.lab.minibatch import STUDIES, Study
from cdat_core.lab.needs import Need
from cdat_core.lab.problems import PROBLEMS
from cdat_core.lab.tuners import TUNERS

__all__ = [
    "BUDGETS",
    "CATALOGS",
    "MEASUREMENTS",
    "ExperimentSpec",
    "Plan",
    "SweepSpec",
    "build_plan",
    "unmet",
]

#: The measurements a plan can ask for (made by :mod:`cdat_core.lab.verify`).
MEASUREMENTS = ("identity", "models", "costs", "cheap_costs", "minibatch")
#: The budgets of ``cdat-core verify``.
BUDGETS = ("quick", "full")


class ExperimentSpec(NamedTuple):
    """A problem and a base optimizer.

    Attributes:
      model: a name in :data:`cdat_core.lab.problems.PROBLEMS`.
      size: hidden widths (MLP) or channels (CNN).
      num_examples: the first examples of the data used (full batch).
      base: a name in :data:`cdat_core.lab.bases.BASES`.
      vectorize: run a grid with ``vmap`` (else one run after the other).
    """

    model: str
    size: tuple[int, ...]
    num_examples: int
    base: str
    vectorize: bool = True

    def description(self) -> str:
        """The experiment in words, for the report.

        Example:
          >>> from cdat_core.lab.plans import ExperimentSpec
          >>> ExperimentSpec("mlp", (32, 32), 256, "momentum").description()
          'digits MLP 64-32-32-10, 256 examples, full batch, GD with momentum 0.9'
        """
        what = PROBLEMS.lookup(self.model).describe(self.size)
        base = BASES.lookup(self.base).description
        return f"{what}, {self.num_examples} examples, full batch, {base}"

    def build(self, seed: int) -> Any:
        """The problem at the initial weights of ``seed``."""
        return PROBLEMS.lookup(self.model).build(
            self.size, num_examples=self.num_examples, seed=seed
        )


class SweepSpec(NamedTuple):
    r"""One grid of one tuner, run side by side.

    Attributes:
      experiment: the experiment's name in the plan.
      tuner: a name in :data:`cdat_core.lab.tuners.TUNERS`.
      hyperparams: one dict per run (missing numbers take the tuner's defaults).
      num_steps: steps per run.
      relative: numbers given in units of :math:`1/\lambda_0` (multiplied by it at run time).
      static: structural settings (see :func:`cdat_core.lab.tuners.factory`).
      select: pick the best run of the grid (appendix C.3) for the claims.
      extend: a number of a power-of-2 grid: when the best run is at an end of the grid, the
        grid is extended by one point (x2 or /2) there, up to
        :data:`cdat_core.lab.verify.MAX_GRID_EXTENSIONS` times (appendix C.3 widens grids
        until the best is inside); empty for fixed grids.
    """

    experiment: str
    tuner: str
    hyperparams: tuple[dict[str, float], ...]
    num_steps: int
    relative: tuple[str, ...] = ()
    static: tuple[tuple[str, Any], ...] = ()
    select: bool = True
    extend: str = ""


class Plan(NamedTuple):
    """A budget: experiments, sweeps, measurements, and measurement settings.

    Attributes:
      budget: ``"quick"`` or ``"full"`` (or a test's name).
      experiments: name -> :class:`ExperimentSpec`; an experiment's PRNG key is folded
        with a stable hash of its name (:func:`cdat_core.lab.runner.experiment_key`).
      sweeps: the :class:`SweepSpec` to run, in order.
      record_every: steps between sharpness measurements.
      sharpness_iters: Lanczos steps per measurement.
      cost_rounds: timed rounds of the wall-time ratios.
      cost_number: calls per round.
      measurements: name (in :data:`MEASUREMENTS`) -> the experiment it is made on (``""``:
        none); a catalog lists those it affords.
      seeds: how many seeds every experiment is run from (``cdat-core verify --seeds``
        overrides it).
      minibatch: the mini-batch study the ``minibatch`` measurement runs
        (:data:`cdat_core.lab.minibatch.STUDIES`; ``None``: none).
      spectra: measure Hessian spectral densities on the first seed of the experiment
        :data:`cdat_core.lab.spectra.EXPERIMENT` (see :func:`cdat_core.lab.runner.run_sweep`).
    """

    budget: str
    experiments: dict[str, ExperimentSpec]
    sweeps: tuple[SweepSpec, ...]
    record_every: int
    sharpness_iters: int
    cost_rounds: int
    cost_number: int
    measurements: dict[str, str] = {}  # noqa: RUF012 (NamedTuple default, never mutated)
    seeds: int = 5
    minibatch: Study | None = None
    spectra: bool = False


def _pow2(exponents: Sequence[int], name: str = "learning_rate") -> tuple[dict[str, float], ...]:
    return tuple({name: math.ldexp(1.0, i)} for i in exponents)


_SIGMAS = (1.0, 1.9375, 2.0, 2.0625, 2.5)
# The paper's grid is c in {0, 1e-4, 0.5}; c = 0 was never the best on any seed of the full
# budget (c = 0.5 was, on all 5 seeds), so the full budget runs the two that can be selected.
_LINESEARCH_FULL = tuple({"c": c} for c in (1e-4, 0.5))
_EVERY_MEASUREMENT = dict.fromkeys(MEASUREMENTS, "")


def _cheap_cdat_sweeps(gd: int, other: int) -> tuple[SweepSpec, ...]:
    """CDAT σ=2 with each cheap estimator (claims C7, C8), beside exact CDAT's runs."""
    out = []
    for experiment, steps, numbers in (
        ("gd", gd, {"sigma": 2.0}),
        ("adam", other, {"sigma": 2.0, "ema_decay": 0.9}),
        ("cnn_gd", other, {"sigma": 2.0}),
        ("cnn_adam", other, {"sigma": 2.0, "ema_decay": 0.9}),
    ):
        for tuner in ESTIMATORS:
            out.append(SweepSpec(experiment, tuner, (numbers,), steps, select=False))
    return tuple(out)


def _full_catalog() -> Plan:
    mlp = (128, 128)
    gd, other, rel = 1000, 500, ("learning_rate",)
    sweeps = (
        SweepSpec("gd", "constant", _pow2(range(1, 4)), gd, rel, extend="learning_rate"),
        SweepSpec("gd", "cdat", tuple({"sigma": s} for s in _SIGMAS), gd, select=False),
        SweepSpec("gd", "linesearch", _LINESEARCH_FULL, gd),
        SweepSpec("gd", "polyak", ({"max_learning_rate": 1.0}, {"max_learning_rate": 100.0}), gd),
        SweepSpec(
            "gd",
            "hypergradient",
            tuple({"beta": b, "initial_learning_rate": 1.0} for b in (1e-2, 1e-1, 1.0)),
            gd,
            ("initial_learning_rate",),
        ),
        SweepSpec(
            "gd",
            "warmup_cosine",
            _pow2(range(2, 5), "peak_learning_rate"),
            gd,
            ("peak_learning_rate",),
            (("num_steps", gd), ("warmup_fraction", 0.1)),
            extend="peak_learning_rate",
        ),
        SweepSpec(
            "gd",
            "sharpness",
            ({"sigma": 2.0}, {"sigma": 3.0}),
            500,
            static=(("num_iters", 5),),
            select=False,
        ),
        SweepSpec("momentum", "constant", _pow2(range(1, 4)), other, rel, extend="learning_rate"),
        SweepSpec(
            "momentum", "cdat", tuple({"sigma": s} for s in (1.0, 2.0, 2.0625)), other, select=False
        ),
        SweepSpec(
            "adam",
            "constant",
            tuple({"learning_rate": 1e-3 * 2.0**i} for i in range(2, 5)),
            other,
            extend="learning_rate",
        ),
        SweepSpec(
            "adam",
            "cdat",
            tuple({"sigma": s, "ema_decay": 0.9} for s in (1.0, 2.0, 2.0625)),
            other,
            select=False,
        ),
        SweepSpec("cnn_gd", "constant", _pow2(range(1, 4)), other, rel, extend="learning_rate"),
        SweepSpec("cnn_gd", "cdat", ({"sigma": 1.0}, {"sigma": 2.0}), other, select=False),
        SweepSpec("cnn_adam", "cdat", ({"sigma": 2.0, "ema_decay": 0.9},), other, select=False),
        *_cheap_cdat_sweeps(gd, other),
    )
    return Plan(
        budget="full",
        experiments={
            "gd": ExperimentSpec("mlp", mlp, 512, "gd"),
            "momentum": ExperimentSpec("mlp", mlp, 512, "momentum"),
            "adam": ExperimentSpec("mlp", mlp, 512, "adam"),
            "cnn_gd": ExperimentSpec("cnn", (8, 16), 512, "gd", vectorize=False),
            "cnn_adam": ExperimentSpec("cnn", (8, 16), 512, "adam", vectorize=False),
        },
        sweeps=sweeps,
        record_every=50,
        sharpness_iters=20,
        cost_rounds=7,
        cost_number=5,
        measurements=_EVERY_MEASUREMENT,
        seeds=5,
        minibatch=STUDIES["full"],
        spectra=True,
    )


def _quick_catalog() -> Plan:
    steps = 300
    sweeps = (
        SweepSpec(
            "gd", "constant", _pow2(range(0, 4)), steps, ("learning_rate",), extend="learning_rate"
        ),
        SweepSpec("gd", "cdat", tuple({"sigma": s} for s in _SIGMAS), steps, select=False),
        SweepSpec("gd", "linesearch", ({"c": 1e-4},), steps),
    )
    return Plan(
        budget="quick",
        experiments={"gd": ExperimentSpec("mlp", (32, 32), 256, "gd")},
        sweeps=sweeps,
        record_every=25,
        sharpness_iters=20,
        cost_rounds=3,
        cost_number=3,
        measurements=_EVERY_MEASUREMENT,
        seeds=2,
        minibatch=STUDIES["quick"],
    )


#: What each budget affords: budget -> ``() -> Plan`` with every sweep it may run.
CATALOGS: dict[str, Callable[[], Plan]] = {"quick": _quick_catalog, "full": _full_catalog}


def _numbers(sweep: SweepSpec) -> list[dict[str, Any]]:
    defaults = TUNERS.lookup(sweep.tuner).defaults
    return [{**defaults, **hp} for hp in sweep.hyperparams]


def _has_point(sweep: SweepSpec, numbers: Mapping[str, Any]) -> bool:
    return any(all(p.get(k) == v for k, v in numbers.items()) for p in _numbers(sweep))


def provides(plan: Plan, sweep: SweepSpec, need: Need) -> bool:
    """Whether ``sweep`` of ``plan`` provides ``need`` (a run, a selected run or a grid).

    Example:
      >>> from cdat_core.lab import needs, plans
      >>> plan = plans.CATALOGS["quick"]()
      >>> cdat = plan.sweeps[1]
      >>> [plans.provides(plan, cdat, n) for n in (needs.run("gd", "cdat", sigma=2.0),
      ...     needs.selected("gd", "greedy"), needs.run("gd", "cdat", sigma=3.0))]
      [True, True, False]
    """
    if need.kind == "measured" or sweep.experiment != need.experiment:
        return False
    if need.kind == "run":
        return sweep.tuner == need.name and _has_point(sweep, dict(need.numbers))
    if need.kind == "selected":
        if sweep.tuner == need.name and sweep.select:
            return True
        designated = TUNERS.lookup(sweep.tuner).designates.get(need.name)
        return designated is not None and _has_point(sweep, designated)
    return sweep.tuner == need.name


def unmet(plan: Plan, needs: Iterable[Need]) -> list[Need]:
    """The needs that ``plan`` does not provide.

    Example:
      >>> from cdat_core.lab import needs, plans
      >>> plans.unmet(plans.CATALOGS["quick"](), [needs.selected("gd", "polyak"),
      ...     needs.measured("costs", experiment="gd")])  # doctest: +ELLIPSIS
      [Need(kind='selected', name='polyak', experiment='gd', ...)]
    """
    out = []
    for need in needs:
        if need.kind == "measured":
            ok = need.name in plan.measurements and (
                not need.experiment or need.experiment in plan.experiments
            )
        else:
            ok = any(provides(plan, s, need) for s in plan.sweeps)
        if not ok:
            out.append(need)
    return out


class _Claim(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def needs(self) -> Mapping[str, Need]: ...
    @property
    def budgets(self) -> tuple[str, ...]: ...


def build_plan(budget: str, claims: Iterable[_Claim]) -> Plan:
    """The plan of ``budget``: what ``claims`` (those declared for it) need of its catalog.

    Sweeps, experiments and measurements that no claim of the budget needs are left out;
    the catalog's order is kept.

    Args:
      budget: a key of :data:`CATALOGS`.
      claims: the claims (``id``, ``needs``, ``budgets``), e.g.
        ``cdat_core.lab.claims.CLAIMS.values()``.

    Returns:
      The :class:`Plan`.

    Raises:
      ValueError: an unknown budget, or a claim of the budget needs what its catalog lacks.

    Example:
      >>> from cdat_core.lab import claims, plans
      >>> plan = plans.build_plan("quick", claims.CLAIMS.values())
      >>> [(s.experiment, s.tuner) for s in plan.sweeps]
      [('gd', 'constant'), ('gd', 'cdat'), ('gd', 'linesearch')]
    """
    if budget not in CATALOGS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {sorted(CATALOGS)}")
    catalog = CATALOGS[budget]()
    needs: list[Need] = []
    for claim in claims:
        if budget not in claim.budgets:
            continue
        missing = unmet(catalog, claim.needs.values())
        if missing:
            raise ValueError(
                f"claim {claim.id!r} needs {[n.label for n in missing]} in "
                f"{[n.experiment for n in missing]}, which the {budget} catalog lacks; add "
                "them to cdat_core/lab/plans.py"
            )
        needs.extend(claim.needs.values())
    sweeps = tuple(s for s in catalog.sweeps if any(provides(catalog, s, n) for n in needs))
    measurements: dict[str, str] = {}
    for need in needs:
        if need.kind == "measured":
            where = measurements.setdefault(need.name, need.experiment)
            if where != need.experiment:
                raise ValueError(
                    f"claims need {need.name} on both {where!r} and {need.experiment!r}"
                )
    used = {s.experiment for s in sweeps} | set(measurements.values())
    experiments = {k: v for k, v in catalog.experiments.items() if k in used}
    return catalog._replace(experiments=experiments, sweeps=sweeps, measurements=measurements)
