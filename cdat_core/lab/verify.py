r"""The main job: run a budget's plan over seeds, evaluate the paper's claims, write the report.

:func:`run_verify` runs a :class:`~cdat_core.lab.plans.Plan` (:data:`PLANS`: ``"quick"`` and
``"full"``, built from the registered claims' needs by
:func:`cdat_core.lab.plans.build_plan`; the budgets are described in
:mod:`cdat_core.lab.plans`) from several seeds, writes ``report.json`` and PNG plots into a
folder, and returns the report; the claims table is
:func:`cdat_core.lab.claims.format_table` of ``report["claims"]``.

The steps: the measurements that need no training (:data:`MEASUREMENTS`: identities per
seed, the simplified models once); per experiment and seed, the problem
(:data:`cdat_core.lab.problems.PROBLEMS`), its initial sharpness :math:`\lambda_0` and key
(:mod:`cdat_core.lab.runner`); every sweep (a grid of one tuner of
:data:`cdat_core.lab.tuners.TUNERS`) for every seed at once, seeds x grid points being the
lanes of one compiled program, with the appendix C.3 selection per seed; the measurements
made on an experiment's problem (costs, once); every claim on every seed, and the verdict
rule (:mod:`cdat_core.lab.claims.verdicts`); the plots (of the first seed).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

import cdat_core
from cdat_core.lab import claims as claims_lib
from cdat_core.lab import compile_cache, measurements, plans, plots, runner
from cdat_core.lab import report as report_lib
from cdat_core.lab.plans import ExperimentSpec, Plan, SweepSpec
from cdat_core.lab.runner import MAX_GRID_EXTENSIONS, Built

__all__ = [
    "MAX_GRID_EXTENSIONS",
    "MEASUREMENTS",
    "PLANS",
    "ExperimentSpec",
    "Plan",
    "SweepSpec",
    "run_verify",
    "seed_results",
]


def _plan(budget: str) -> Plan:
    return plans.build_plan(budget, claims_lib.CLAIMS.values())


#: The budgets of ``cdat-core verify``: name -> ``() -> Plan`` for the registered claims.
PLANS: dict[str, Callable[[], Plan]] = {b: functools.partial(_plan, b) for b in plans.BUDGETS}


class Measurement(NamedTuple):
    """A measurement that is not a training run.

    Attributes:
      run: ``(plan, built experiments, experiment name, seed) -> plain data``.
      after_runs: made after the sweeps (else before them).
      per_seed: made for every seed (else once: no seed enters it, or, for timings, one
        measurement serves all).
    """

    run: Callable[[Plan, dict[str, Built], str, int], Any]
    after_runs: bool
    per_seed: bool = True


def _costs(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    description = plan.experiments[experiment].description().replace(", GD", "")
    return measurements.cost_ratios(
        built[experiment].problems[0],
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
    "models": Measurement(_models, after_runs=False, per_seed=False),
    "costs": Measurement(_costs, after_runs=True, per_seed=False),
}


def _measure(
    plan: Plan, built: dict[str, Built], seeds: list[int], after_runs: bool, results: dict[str, Any]
) -> dict[str, float]:
    seconds = {}
    for name, experiment in plan.measurements.items():
        measurement = MEASUREMENTS[name]
        if measurement.after_runs != after_runs:
            continue
        t = time.perf_counter()
        if measurement.per_seed:
            for seed in seeds:
                results["per_seed"][str(seed)][name] = measurement.run(
                    plan, built, experiment, seed
                )
        else:
            results["shared"][name] = measurement.run(plan, built, experiment, seeds[0])
        seconds[name] = time.perf_counter() - t
    return seconds


def seed_results(results: dict[str, Any], seed: int) -> dict[str, Any]:
    """One seed's results (what :func:`cdat_core.lab.claims.evaluate_claims` reads).

    Args:
      results: ``report["results"]``: ``budget``, ``seeds``, ``shared`` (measurements made
        once) and ``per_seed`` (seed as a string -> ``experiments`` and per-seed measurements).
      seed: one of ``results["seeds"]``.

    Returns:
      ``{"budget", **shared, **per_seed[seed]}``.

    Example:
      >>> from cdat_core.lab import verify
      >>> results = {"budget": "b", "seeds": [3], "shared": {"models": {}},
      ...            "per_seed": {"3": {"experiments": {}}}}
      >>> sorted(verify.seed_results(results, 3))
      ['budget', 'experiments', 'models']
    """
    return {"budget": results["budget"], **results["shared"], **results["per_seed"][str(seed)]}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment() -> dict[str, Any]:
    import jaxlib

    return {
        "cdat_core": cdat_core.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "devices": [str(d) for d in jax.devices()],
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def run_verify(
    budget: str | Plan = "quick",
    out_dir: str | Path = "cdat-core-report",
    *,
    seed: int = 0,
    seeds: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run a budget's experiments over seeds, evaluate the claims, write ``report.json``, PNGs.

    Args:
      budget: a key of :data:`PLANS`, or a :class:`~cdat_core.lab.plans.Plan`.
      out_dir: the output folder (created); ``report.json`` and ``plots/*.png`` go there.
      seed: the first seed; the seeds are ``seed, seed + 1, ...``. A seed sets the initial
        weights and every PRNG key of its runs.
      seeds: how many seeds (default: the plan's ``seeds``).
      progress: show a tqdm progress bar on stderr (default: when stderr is a terminal) and
        one line per stage with an ETA (unless ``False``).

    Returns:
      The report: ``budget``, ``seeds``, ``verdict_rule``, ``environment``, ``plan``,
      ``compile`` (see :func:`cdat_core.lab.compile_cache.counts`), ``seconds`` (per part and
      total), ``results`` (see :func:`seed_results`), ``claims`` (one dict per claim, see
      :class:`cdat_core.lab.claims.Verdict`), ``summary`` and ``plots``.

    Raises:
      ValueError: an unknown budget or measurement, or fewer than 1 seed.
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
    num_seeds = plan.seeds if seeds is None else int(seeds)
    if num_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    seed_list = [seed + i for i in range(num_seeds)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    compiled_before = compile_cache.counts()
    seconds: dict[str, float] = {}
    steps = sum(
        len(s.hyperparams) * runner.chunks(s.num_steps, plan.record_every) for s in plan.sweeps
    )
    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = runner.Progress(num_seeds * steps, lines=progress is not False, bar=show_bar)
    results: dict[str, Any] = {
        "budget": plan.budget,
        "seeds": seed_list,
        "shared": {},
        "per_seed": {str(s): {"experiments": {}} for s in seed_list},
    }

    bar.stage("measurements")
    seconds.update(_measure(plan, {}, seed_list, False, results))
    bar.stage("building problems")
    t = time.perf_counter()
    built = runner.build(plan, seed_list)
    seconds["build"] = time.perf_counter() - t
    for name, spec in plan.experiments.items():
        for s, lam0 in zip(seed_list, built[name].initial_sharpness, strict=True):
            results["per_seed"][str(s)]["experiments"][name] = {
                "description": spec.description(),
                "initial_sharpness": lam0,
                "runs": {},
                "selected": {},
            }
    for i, sweep in enumerate(plan.sweeps):
        t = time.perf_counter()
        stage = f"{sweep.experiment}: {sweep.tuner}"
        bar.stage(stage)
        exps = [results["per_seed"][str(s)]["experiments"][sweep.experiment] for s in seed_list]
        runner.run_sweep(plan, sweep, built[sweep.experiment], exps, bar)
        seconds[f"{sweep.experiment}:{sweep.tuner}"] = took = time.perf_counter() - t
        bar.finished(
            f"sweep {i + 1}/{len(plan.sweeps)} {stage} ({num_seeds} seeds x "
            f"{len(sweep.hyperparams)} runs, {sweep.num_steps} steps)",
            took,
        )
    bar.close()
    seconds.update(_measure(plan, built, seed_list, True, results))

    results = report_lib.sanitize(results)
    shared = {n for n in plan.measurements if not MEASUREMENTS[n].per_seed}
    verdicts = claims_lib.evaluate_over_seeds(
        {s: seed_results(results, s) for s in seed_list}, shared=shared
    )
    report: dict[str, Any] = {
        "budget": plan.budget,
        "seeds": seed_list,
        "verdict_rule": claims_lib.VERDICT_RULE,
        "environment": _environment(),
        "plan": {
            "record_every": plan.record_every,
            "sharpness_iters": plan.sharpness_iters,
            "experiments": {k: v._asdict() for k, v in plan.experiments.items()},
            "sweeps": [s._asdict() for s in plan.sweeps],
        },
        "results": results,
        "claims": [v._asdict() for v in verdicts],
        "summary": claims_lib.summary(verdicts),
    }
    t = time.perf_counter()
    first = {"results": seed_results(results, seed_list[0])}
    report["plots"] = plots.plot_report(first, out / "plots")
    seconds["plots"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    report["seconds"] = seconds
    after = compile_cache.counts()
    report["compile"] = {k: after[k] - compiled_before[k] for k in after}
    report["compile"]["cache_dir"] = compile_cache.current_dir()
    report = report_lib.sanitize(report)
    with open(out / "report.json", "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1, allow_nan=False)
    return report
