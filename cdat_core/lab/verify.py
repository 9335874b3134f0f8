r"""The main job: run the paper's experiments at a CPU budget, evaluate its claims, report.

:func:`run_verify` runs a :class:`Plan` (:data:`PLANS`: ``"quick"`` and ``"full"``), writes
``report.json`` and PNG plots into a folder, and returns the report; the claims table is
:func:`cdat_core.lab.claims.format_table` of ``report["claims"]``.

Budgets (measured on 2 shared CPU cores; see ``cdat-core verify --help``):

- ``full`` (< 10 min): the digits MLP 64-128-128-10 on the first 512 examples (the paper's
  full-batch experiments also use data subsets; 64-256-256-10 on all 1797 examples costs
  about 10x more per step, too much for every tuner at this budget), full batch. GD: 2000
  steps for the constant-η grid :math:`\{2^i/\lambda_0\}_{i=-1}^{4}`, the linesearch grid
  (:math:`c \in \{0, 10^{-4}, 0.5\}`, :math:`c_- = 0.8`, :math:`c_+ = 4`), CDAT
  :math:`\sigma \in \{1, 1.9375, 2, 2.0625, 2.5\}`, Polyak (:math:`\eta_{\max} \in \{1,
  100\}`), hyper-gradient (:math:`\beta \in \{10^{-3}, \dots, 1\}`) and warm-up + cosine
  (peak :math:`\{2^i/\lambda_0\}_{i=0}^{5}`); 500 steps for the exact-sharpness rule
  (:math:`\sigma \in \{2, 3\}`, 5 Lanczos steps per update). GD with momentum and Adam:
  1000 steps, a constant grid and CDAT :math:`\sigma \in \{1, 2, 2.0625\}` (EMA 0.9 with
  Adam). The digits CNN (second architecture): 1000 steps, constant grid and CDAT
  :math:`\sigma \in \{1, 2\}`. :math:`\lambda_0` is the measured initial sharpness. The
  power-of-2 grids (constant, warm-up peak) are extended while their best point is at an
  end (appendix C.3), at most 3 times.
- ``quick`` (< 1 min): the digits MLP 64-32-32-10 on the first 256 examples, GD only,
  300 steps (compilation dominates this budget): the constant grid
  :math:`\{2^i/\lambda_0\}_{i=0}^{3}`, linesearch (:math:`c = 10^{-4}`) and the CDAT
  :math:`\sigma` set; every claim type is evaluated (identities, findings 1-3, models,
  costs), but 300 steps are too few for the long-run findings, which may FAIL there; the
  claims of the other tuners and base optimizers are N/A.

Sharpness is measured every ``record_every`` steps with at most 20 Lanczos steps warm-started
from the previous eigenvector (stopping at a relative residual of 1e-3). At the edge of
stability the top eigenvalues cluster: on the full budget's MLP, 10 warm-started steps
read 2.5 % low against an 80-step cold start, which 20 cold-start steps match to 5 digits. The
best run of a grid is picked by the mean loss of its last 5 iterates (appendix C.3).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax

import cdat_core
from cdat_core.lab import claims as claims_lib
from cdat_core.lab import measurements, plots, problems, train, tuners
from cdat_core.lab import report as report_lib

__all__ = [
    "PLANS",
    "ExperimentSpec",
    "Plan",
    "SweepSpec",
    "run_verify",
]


class ExperimentSpec(NamedTuple):
    """A problem and a base optimizer.

    Attributes:
      model: ``"mlp"`` or ``"cnn"``.
      size: hidden widths (MLP) or channels (CNN).
      num_examples: the first examples of the digits data used (full batch).
      base: a name in :data:`cdat_core.lab.tuners.BASES`.
      vectorize: run a grid with ``vmap`` (else one run after the other).
    """

    model: str
    size: tuple[int, ...]
    num_examples: int
    base: str
    vectorize: bool = True

    def description(self) -> str:
        """The experiment in words, for the report."""
        if self.model == "mlp":
            what = "digits MLP " + "-".join(str(n) for n in (64, *self.size, 10))
        else:
            what = f"digits CNN (channels {self.size[0]}, {self.size[1]})"
        base = {"gd": "GD", "momentum": "GD with momentum 0.9", "adam": "Adam"}[self.base]
        return f"{what}, {self.num_examples} examples, full batch, {base}"


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
        :data:`MAX_GRID_EXTENSIONS` times (appendix C.3 widens grids until the best is
        inside); empty for fixed grids.
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
    """A budget: experiments, sweeps, and measurement settings.

    Attributes:
      budget: ``"quick"`` or ``"full"``.
      experiments: name -> :class:`ExperimentSpec`.
      sweeps: the :class:`SweepSpec` to run, in order.
      record_every: steps between sharpness measurements.
      sharpness_iters: Lanczos steps per measurement.
      cost_rounds: timed rounds of the wall-time ratios.
      cost_number: calls per round.
    """

    budget: str
    experiments: dict[str, ExperimentSpec]
    sweeps: tuple[SweepSpec, ...]
    record_every: int
    sharpness_iters: int
    cost_rounds: int
    cost_number: int


#: How many times a grid whose best point is at an end is extended (see :class:`SweepSpec`).
MAX_GRID_EXTENSIONS = 3


def _chunks(num_steps: int, record_every: int) -> int:
    return -(-num_steps // record_every) * record_every


def _pow2(exponents: Sequence[int], name: str = "learning_rate") -> tuple[dict[str, float], ...]:
    return tuple({name: math.ldexp(1.0, i)} for i in exponents)


_SIGMAS = (1.0, 1.9375, 2.0, 2.0625, 2.5)
_LINESEARCH = tuple({"c": c} for c in (0.0, 1e-4, 0.5))


def _full_plan() -> Plan:
    mlp = (128, 128)
    gd, other, rel = 2000, 1000, ("learning_rate",)
    sweeps = (
        SweepSpec("gd", "constant", _pow2(range(-1, 5)), gd, rel, extend="learning_rate"),
        SweepSpec("gd", "cdat", tuple({"sigma": s} for s in _SIGMAS), gd, select=False),
        SweepSpec("gd", "linesearch", _LINESEARCH, gd),
        SweepSpec("gd", "polyak", ({"max_learning_rate": 1.0}, {"max_learning_rate": 100.0}), gd),
        SweepSpec(
            "gd",
            "hypergradient",
            tuple({"beta": b, "initial_learning_rate": 1.0} for b in (1e-3, 1e-2, 1e-1, 1.0)),
            gd,
            ("initial_learning_rate",),
        ),
        SweepSpec(
            "gd",
            "warmup_cosine",
            _pow2(range(0, 6), "peak_learning_rate"),
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
        SweepSpec("momentum", "constant", _pow2(range(-3, 3)), other, rel, extend="learning_rate"),
        SweepSpec(
            "momentum", "cdat", tuple({"sigma": s} for s in (1.0, 2.0, 2.0625)), other, select=False
        ),
        SweepSpec(
            "adam",
            "constant",
            tuple({"learning_rate": 1e-3 * 2.0**i} for i in range(-1, 6)),
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
        SweepSpec("cnn_gd", "constant", _pow2(range(-1, 5)), other, rel, extend="learning_rate"),
        SweepSpec("cnn_gd", "cdat", ({"sigma": 1.0}, {"sigma": 2.0}), other, select=False),
    )
    return Plan(
        budget="full",
        experiments={
            "gd": ExperimentSpec("mlp", mlp, 512, "gd"),
            "momentum": ExperimentSpec("mlp", mlp, 512, "momentum"),
            "adam": ExperimentSpec("mlp", mlp, 512, "adam"),
            "cnn_gd": ExperimentSpec("cnn", (8, 16), 512, "gd", vectorize=False),
        },
        sweeps=sweeps,
        record_every=100,
        sharpness_iters=20,
        cost_rounds=7,
        cost_number=5,
    )


def _quick_plan() -> Plan:
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
    )


#: The budgets of ``cdat-core verify``.
PLANS: dict[str, Callable[[], Plan]] = {"quick": _quick_plan, "full": _full_plan}


def _build(spec: ExperimentSpec, seed: int) -> Any:
    if spec.model == "mlp":
        return problems.subset(problems.digits_mlp(spec.size, seed=seed), spec.num_examples)
    return problems.subset(problems.digits_cnn(spec.size, seed=seed), spec.num_examples)


def _resolve(sweep: SweepSpec, lam0: float) -> list[dict[str, float]]:
    out = []
    for hp in sweep.hyperparams:
        numbers = {**tuners.DEFAULTS[sweep.tuner], **hp}
        for name in sweep.relative:
            numbers[name] = numbers[name] / lam0
        out.append(numbers)
    return out


def _sweep(
    plan: Plan,
    sweep: SweepSpec,
    built: tuple[Any, float, jax.Array],
    numbers: list[dict[str, float]],
    progress: Callable[[int], Any],
) -> list[train.TrainResult]:
    spec = plan.experiments[sweep.experiment]
    problem, _, key = built
    return train.sweep(
        problem.loss,
        problem.params,
        tuners.factory(sweep.tuner, spec.base, **dict(sweep.static)),
        numbers,
        num_steps=sweep.num_steps,
        data=(problem.inputs, problem.targets),
        record_every=plan.record_every,
        sharpness_iters=plan.sharpness_iters,
        key=key,
        preconditioner=tuners.preconditioner(spec.base),
        progress=progress,
        vectorize=spec.vectorize,
    )


def run_verify(
    budget: str = "quick",
    out_dir: str | Path = "cdat-core-report",
    *,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run a budget's experiments, evaluate the claims, write ``report.json`` and PNGs.

    Args:
      budget: a key of :data:`PLANS`.
      out_dir: the output folder (created); ``report.json`` and ``plots/*.png`` go there.
      seed: seeds the initial weights and every PRNG key.
      progress: show a tqdm progress bar on stderr (default: when stderr is a terminal).

    Returns:
      The report: ``budget``, ``seed``, ``environment``, ``plan``, ``seconds`` (per part and
      total), ``results`` (see :func:`cdat_core.lab.claims.evaluate_claims`), ``claims``
      (list of dicts with ``status``), ``summary`` and ``plots``.
    """
    if budget not in PLANS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {sorted(PLANS)}")
    plan = PLANS[budget]()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    key = jax.random.key(seed)
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm.auto import tqdm

    total = sum(len(s.hyperparams) * _chunks(s.num_steps, plan.record_every) for s in plan.sweeps)
    bar = tqdm(total=total, unit="step", disable=not show, file=sys.stderr, dynamic_ncols=True)
    results: dict[str, Any] = {"budget": plan.budget, "experiments": {}}

    t = time.perf_counter()
    bar.set_description("identities")
    results["identity"] = measurements.identity_checks(seed=seed)
    results["models"] = measurements.model_trajectories()
    seconds["identities_and_models"] = time.perf_counter() - t

    built: dict[str, tuple[Any, float, jax.Array]] = {}
    for i, (name, spec) in enumerate(plan.experiments.items()):
        problem = _build(spec, seed)
        exp_key = jax.random.fold_in(key, i)
        lam0 = train.initial_sharpness(
            problem.loss, problem.params, (problem.inputs, problem.targets), key=exp_key
        )
        built[name] = (problem, lam0, exp_key)
        results["experiments"][name] = {
            "description": spec.description(),
            "initial_sharpness": lam0,
            "runs": {},
            "selected": {},
        }
    for sweep in plan.sweeps:
        t = time.perf_counter()
        bar.set_description(f"{sweep.experiment}: {sweep.tuner}")
        hps = _resolve(sweep, built[sweep.experiment][1])
        runs = _sweep(plan, sweep, built[sweep.experiment], hps, bar.update)
        exp = results["experiments"][sweep.experiment]
        if sweep.select:
            extended = 0
            best, inside = tuners.select_best([r.history for r in runs])
            # Appendix C.3: the grid is widened until its best point is inside it.
            while sweep.extend and not inside and extended < MAX_GRID_EXTENSIONS:
                up = best == len(hps) - 1
                new = {**hps[best], sweep.extend: hps[best][sweep.extend] * (2.0 if up else 0.5)}
                bar.total += _chunks(sweep.num_steps, plan.record_every)
                more = _sweep(plan, sweep, built[sweep.experiment], [new], bar.update)
                hps, runs = ([*hps, new], runs + more) if up else ([new, *hps], more + runs)
                extended += 1
                best, inside = tuners.select_best([r.history for r in runs])
            exp.setdefault("grid_extensions", {})[sweep.tuner] = extended
            exp.setdefault("best_inside_grid", {})[sweep.tuner] = inside
        labels = [report_lib.label(sweep.tuner, hp) for hp in hps]
        for lab, hp, res in zip(labels, hps, runs, strict=True):
            exp["runs"][lab] = report_lib.run_summary(res, tuner=sweep.tuner, hyperparams=hp)
        if sweep.select:
            exp["selected"][sweep.tuner] = labels[best]
        if sweep.tuner == "cdat":
            for sigma, tuner in ((1.0, "greedy"), (2.0, "cdat")):
                lab = report_lib.label("cdat", {"sigma": sigma})
                if lab in exp["runs"]:
                    exp["selected"][tuner] = lab
        seconds[f"{sweep.experiment}:{sweep.tuner}"] = time.perf_counter() - t
    bar.close()

    t = time.perf_counter()
    gd_spec = plan.experiments["gd"]
    results["costs"] = measurements.cost_ratios(
        built["gd"][0],
        description=gd_spec.description().replace(", GD", "") + " (one GD / CDAT step)",
        rounds=plan.cost_rounds,
        number=plan.cost_number,
    )
    seconds["costs"] = time.perf_counter() - t

    evaluated = claims_lib.evaluate_claims(report_lib.sanitize(results))
    report: dict[str, Any] = {
        "budget": plan.budget,
        "seed": seed,
        "environment": {
            "cdat_core": cdat_core.__version__,
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "plan": {
            "record_every": plan.record_every,
            "sharpness_iters": plan.sharpness_iters,
            "experiments": {k: v._asdict() for k, v in plan.experiments.items()},
            "sweeps": [s._asdict() for s in plan.sweeps],
        },
        "results": results,
        "claims": [{**c._asdict(), "status": c.status} for c in evaluated],
        "summary": claims_lib.summary(evaluated),
    }
    t = time.perf_counter()
    report["plots"] = plots.plot_report(report_lib.sanitize(report), out / "plots")
    seconds["plots"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    report["seconds"] = seconds
    report = report_lib.sanitize(report)
    with open(out / "report.json", "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1, allow_nan=False)
    return report
