r"""The main job: run a budget's plan, evaluate the paper's claims, write the report.

:func:`run_verify` runs a :class:`~cdat_core.lab.plans.Plan` (:data:`PLANS`: ``"quick"`` and
``"full"``, built from the registered claims' needs by
:func:`cdat_core.lab.plans.build_plan`; the budgets are described in
:mod:`cdat_core.lab.plans`), writes ``report.json`` and PNG plots into a folder, and returns
the report; the claims table is :func:`cdat_core.lab.claims.format_table` of
``report["claims"]``.

The steps: the measurements that need no training (:data:`MEASUREMENTS`: identities,
models); per experiment, the problem (:data:`cdat_core.lab.problems.PROBLEMS`) and its
initial sharpness :math:`\lambda_0`; every sweep (a grid of one tuner of
:data:`cdat_core.lab.tuners.TUNERS`, run side by side by :func:`cdat_core.lab.train.sweep`),
with the appendix C.3 selection of the best run by the mean loss of its last 5 iterates
(grids widened while the best is at an end); the measurements made on an experiment's
problem (costs); the claims; the plots.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

import cdat_core
from cdat_core.lab import bases, measurements, plans, plots, train, tuners
from cdat_core.lab import claims as claims_lib
from cdat_core.lab import report as report_lib
from cdat_core.lab.plans import ExperimentSpec, Plan, SweepSpec

__all__ = [
    "MAX_GRID_EXTENSIONS",
    "MEASUREMENTS",
    "PLANS",
    "ExperimentSpec",
    "Plan",
    "SweepSpec",
    "run_verify",
]

#: How many times a grid whose best point is at an end is extended (see
#: :class:`~cdat_core.lab.plans.SweepSpec`).
MAX_GRID_EXTENSIONS = 3

#: An experiment as built: its problem, :math:`\lambda_0` and PRNG key.
Built = tuple[Any, float, jax.Array]


def _plan(budget: str) -> Plan:
    return plans.build_plan(budget, claims_lib.CLAIMS.values())


#: The budgets of ``cdat-core verify``: name -> ``() -> Plan`` for the registered claims.
PLANS: dict[str, Callable[[], Plan]] = {b: functools.partial(_plan, b) for b in plans.BUDGETS}


class Measurement(NamedTuple):
    """A measurement that is not a training run.

    Attributes:
      run: ``(plan, built experiments, experiment name, seed) -> plain data``.
      after_runs: made after the sweeps (else before them).
    """

    run: Callable[[Plan, dict[str, Built], str, int], Any]
    after_runs: bool


def _costs(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    description = plan.experiments[experiment].description().replace(", GD", "")
    return measurements.cost_ratios(
        built[experiment][0],
        description=description + " (one GD / CDAT step)",
        rounds=plan.cost_rounds,
        number=plan.cost_number,
    )


def _identity(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    return measurements.identity_checks(seed=seed)


def _models(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    return measurements.model_trajectories()


#: The measurements a plan may ask for, by name (the keys of ``results``). Those made before
#: the runs get no experiment.
MEASUREMENTS: dict[str, Measurement] = {
    "identity": Measurement(_identity, after_runs=False),
    "models": Measurement(_models, after_runs=False),
    "costs": Measurement(_costs, after_runs=True),
}


def _chunks(num_steps: int, record_every: int) -> int:
    return -(-num_steps // record_every) * record_every


def _resolve(sweep: SweepSpec, lam0: float) -> list[dict[str, float]]:
    out = []
    for hp in sweep.hyperparams:
        numbers = {**tuners.TUNERS.lookup(sweep.tuner).defaults, **hp}
        for name in sweep.relative:
            numbers[name] = numbers[name] / lam0
        out.append(numbers)
    return out


def _sweep(
    plan: Plan,
    sweep: SweepSpec,
    built: Built,
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
        preconditioner=bases.preconditioner(spec.base),
        progress=progress,
        vectorize=spec.vectorize,
    )


def _run_sweep(plan: Plan, sweep: SweepSpec, built: Built, exp: dict[str, Any], bar: Any) -> None:
    """Run ``sweep`` (widening its grid as appendix C.3 does) and record it in ``exp``."""
    hps = _resolve(sweep, built[1])
    runs = _sweep(plan, sweep, built, hps, bar.update)
    if sweep.select:
        extended = 0
        best, inside = tuners.select_best([r.history for r in runs])
        # Appendix C.3: the grid is widened until its best point is inside it.
        while sweep.extend and not inside and extended < MAX_GRID_EXTENSIONS:
            up = best == len(hps) - 1
            new = {**hps[best], sweep.extend: hps[best][sweep.extend] * (2.0 if up else 0.5)}
            bar.total += _chunks(sweep.num_steps, plan.record_every)
            more = _sweep(plan, sweep, built, [new], bar.update)
            hps, runs = ([*hps, new], runs + more) if up else ([new, *hps], more + runs)
            extended += 1
            best, inside = tuners.select_best([r.history for r in runs])
        exp.setdefault("grid_extensions", {})[sweep.tuner] = extended
        exp.setdefault("best_inside_grid", {})[sweep.tuner] = inside
    spec = tuners.TUNERS.lookup(sweep.tuner)
    labels = [spec.run_label(hp) for hp in hps]
    for lab, hp, res in zip(labels, hps, runs, strict=True):
        exp["runs"][lab] = report_lib.run_summary(res, tuner=sweep.tuner, hyperparams=hp)
    if sweep.select:
        exp["selected"][sweep.tuner] = labels[best]
    for name, numbers in spec.designates.items():
        lab = spec.run_label(numbers)
        if lab in exp["runs"]:
            exp["selected"][name] = lab


def _measure(
    plan: Plan, built: dict[str, Built], seed: int, after_runs: bool
) -> dict[str, tuple[Any, float]]:
    out = {}
    for name, experiment in plan.measurements.items():
        measurement = MEASUREMENTS[name]
        if measurement.after_runs == after_runs:
            t = time.perf_counter()
            out[name] = (measurement.run(plan, built, experiment, seed), time.perf_counter() - t)
    return out


def run_verify(
    budget: str | Plan = "quick",
    out_dir: str | Path = "cdat-core-report",
    *,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run a budget's experiments, evaluate the claims, write ``report.json`` and PNGs.

    Args:
      budget: a key of :data:`PLANS`, or a :class:`~cdat_core.lab.plans.Plan`.
      out_dir: the output folder (created); ``report.json`` and ``plots/*.png`` go there.
      seed: seeds the initial weights and every PRNG key.
      progress: show a tqdm progress bar on stderr (default: when stderr is a terminal).

    Returns:
      The report: ``budget``, ``seed``, ``environment``, ``plan``, ``seconds`` (per part and
      total), ``results`` (see :func:`cdat_core.lab.claims.evaluate_claims`), ``claims``
      (list of dicts with ``status``), ``summary`` and ``plots``.
    """
    if isinstance(budget, Plan):
        plan = budget
    elif budget in PLANS:
        plan = PLANS[budget]()
    else:
        raise ValueError(f"unknown budget {budget!r}; choose one of {sorted(PLANS)}")
    unknown = sorted(set(plan.measurements) - set(MEASUREMENTS))
    if unknown:
        raise ValueError(f"unknown measurements {unknown}; choose from {sorted(MEASUREMENTS)}")
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

    bar.set_description("measurements")
    for name, (value, took) in _measure(plan, {}, seed, after_runs=False).items():
        results[name], seconds[name] = value, took

    built: dict[str, Built] = {}
    for i, (name, spec) in enumerate(plan.experiments.items()):
        problem = spec.build(seed)
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
        exp = results["experiments"][sweep.experiment]
        _run_sweep(plan, sweep, built[sweep.experiment], exp, bar)
        seconds[f"{sweep.experiment}:{sweep.tuner}"] = time.perf_counter() - t
    bar.close()

    for name, (value, took) in _measure(plan, built, seed, after_runs=True).items():
        results[name], seconds[name] = value, took

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
