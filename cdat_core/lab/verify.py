r"""The main job: run a budget's plan over seeds, evaluate the paper's claims, write the report.

:func:`run_verify` runs a :class:`~cdat_core.lab.plans.Plan` (:data:`PLANS`: ``"quick"`` and
``"full"``, built from the registered claims' needs by
:func:`cdat_core.lab.plans.build_plan`; the budgets are described in
:mod:`cdat_core.lab.plans`) from several seeds, writes ``report.json`` (a partial one as
each stage finishes, so Ctrl-C keeps what finished: :class:`Interrupted`), PNG plots and a
self-contained ``report.html`` into a folder, and returns the report; the claims table is
:func:`cdat_core.lab.claims.format_table` of ``report["claims"]``.

The steps: the measurements that need no training (:data:`MEASUREMENTS`: identities per
seed, the simplified models once); per experiment and seed, the problem
(:data:`cdat_core.lab.problems.PROBLEMS`), its initial sharpness :math:`\lambda_0` and key
(:mod:`cdat_core.lab.runner`); every sweep (a grid of one tuner of
:data:`cdat_core.lab.tuners.TUNERS`) for every seed at once, seeds x grid points being the
lanes of one compiled program, with the appendix C.3 selection per seed; the measurements
made on an experiment's problem (costs, once); the mini-batch study, a stage of its own with
every seed as lanes of its programs (:mod:`cdat_core.lab.minibatch`); every claim on every
seed, and the verdict rule (:mod:`cdat_core.lab.claims.verdicts`); the plots (of the first
seed; the mini-batch heatmap averages the seeds).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

import cdat_core
from cdat_core.lab import (
    cheap_cdat,
    compile_cache,
    measurements,
    minibatch,
    plans,
    plots,
    plots_minibatch,
    runner,
)
from cdat_core.lab import claims as claims_lib
from cdat_core.lab import report as report_lib
from cdat_core.lab.plans import ExperimentSpec, Plan, SweepSpec
from cdat_core.lab.runner import MAX_GRID_EXTENSIONS, Built

__all__ = [
    "MAX_GRID_EXTENSIONS",
    "MEASUREMENTS",
    "PLANS",
    "ExperimentSpec",
    "Interrupted",
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
      stage: a stage of its own after the runs, made once for every seed at once:
        ``run(plan, built, experiment, seeds, progress)`` returns one result per seed.
    """

    run: Callable[..., Any]
    after_runs: bool
    per_seed: bool = True
    stage: bool = False


def _costs(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    description = plan.experiments[experiment].description().replace(", GD", "")
    return measurements.cost_ratios(
        built[experiment].problems[0],
        description=description + " (one GD / CDAT step)",
        rounds=plan.cost_rounds,
        number=plan.cost_number,
    )


def _cheap_costs(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    # Amortized step flops of the cheap CDAT estimators on the plan's MLP and CNN (C7).
    problems = {
        plan.experiments[name].description(): built[name].problems[0]
        for name in ("gd", "cnn_gd")
        if name in built
    }
    return cheap_cdat.cheap_costs(problems)


def _identity(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    return measurements.identity_checks(seed=seed)


def _models(plan: Plan, built: dict[str, Built], experiment: str, seed: int) -> Any:
    return measurements.model_trajectories()


def _minibatch(
    plan: Plan, built: dict[str, Built], experiment: str, seeds: list[int], bar: runner.Progress
) -> list[Any]:
    if plan.minibatch is None:
        raise ValueError("the minibatch measurement needs a plan with a minibatch study")
    bar.add(minibatch.lane_steps(plan.minibatch, len(seeds)))
    return minibatch.run_study(plan.minibatch, seeds, progress=bar.update)


#: The measurements a plan may ask for, by name (the keys of ``results``). Those made before
#: the runs get no experiment.
MEASUREMENTS: dict[str, Measurement] = {
    "identity": Measurement(_identity, after_runs=False),
    "models": Measurement(_models, after_runs=False, per_seed=False),
    "costs": Measurement(_costs, after_runs=True, per_seed=False),
    "cheap_costs": Measurement(_cheap_costs, after_runs=True, per_seed=False),
    "minibatch": Measurement(_minibatch, after_runs=True, stage=True),
}


def _measure(
    plan: Plan, built: dict[str, Built], seeds: list[int], after_runs: bool, results: dict[str, Any]
) -> dict[str, float]:
    seconds = {}
    for name, experiment in plan.measurements.items():
        measurement = MEASUREMENTS[name]
        if measurement.after_runs != after_runs or measurement.stage:
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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_verify`; what finished is in the partial ``report.json``.

    Attributes:
      path: the partial report (``"partial": true``, the finished stages' results).
      stages_done: how many stages finished.
      stages_total: how many the job has.
    """

    def __init__(self, path: Path, stages_done: int, stages_total: int):
        super().__init__(
            f"interrupted after {stages_done}/{stages_total} stages; their results are in {path}"
        )
        self.path, self.stages_done, self.stages_total = path, stages_done, stages_total


def run_verify(
    budget: str | Plan = "quick",
    out_dir: str | Path = "cdat-core-report",
    *,
    seed: int = 0,
    seeds: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run a budget's experiments over seeds, evaluate the claims, write the report and plots.

    ``out_dir/report.json`` is rewritten as each stage finishes (the measurements, the
    problems, every sweep), with ``"partial": true`` and the results so far, and then once
    whole (``"partial": false``, with the claims); the PNG plots (``out_dir/plots``) and a
    self-contained ``out_dir/report.html`` (:func:`cdat_core.lab.html_report.write_html`)
    come at the end. Ctrl-C stops the job: the report then holds the stages that finished
    (``"interrupted": true``) and :class:`Interrupted` is raised.

    Args:
      budget: a key of :data:`PLANS`, or a :class:`~cdat_core.lab.plans.Plan`.
      out_dir: the output folder (created).
      seed: the first seed; the seeds are ``seed, seed + 1, ...``. A seed sets the initial
        weights and every PRNG key of its runs.
      seeds: how many seeds (default: the plan's ``seeds``).
      progress: show a tqdm progress bar on stderr (default: when stderr is a terminal);
        unless ``False``, also timestamped lines (:class:`~cdat_core.lab.runner.Progress`):
        per stage, and every 30 s within one when there is no bar.

    Returns:
      The report: ``budget``, ``seeds``, ``verdict_rule``, ``environment``, ``plan``,
      ``stages``, ``partial`` (False), ``results`` (see :func:`seed_results`), ``claims``
      (one dict per claim, see :class:`cdat_core.lab.claims.Verdict`), ``summary``,
      ``plots``, ``html``, ``seconds`` (per part and total) and ``compile`` (see
      :func:`cdat_core.lab.compile_cache.counts`).

    Raises:
      ValueError: an unknown budget or measurement, or fewer than 1 seed.
      Interrupted: on Ctrl-C (a ``KeyboardInterrupt``), after writing the partial report.
    """
    from cdat_core.lab import html_report

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
    results: dict[str, Any] = {
        "budget": plan.budget,
        "seeds": seed_list,
        "shared": {},
        "per_seed": {str(s): {"experiments": {}} for s in seed_list},
    }
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
    }
    staged = [n for n in plan.measurements if MEASUREMENTS[n].stage]
    if "minibatch" in staged and plan.minibatch is not None:
        report["plan"]["minibatch"] = plan.minibatch._asdict()
    timed = {n: MEASUREMENTS[n].after_runs for n in plan.measurements if n not in staged}
    stages = [
        *(["measurements"] if not all(timed.values()) else []),
        "building problems",
        *(f"{s.experiment}: {s.tuner}" for s in plan.sweeps),
        *(["measurements after the runs"] if any(timed.values()) else []),
        *(f"{n} study" for n in staged),
        "claims, plots and report",
    ]
    report["stages"] = stages
    done: list[str] = []
    built: dict[str, Built] = {}

    def save_partial(interrupted: bool) -> None:
        seconds["total"] = time.perf_counter() - start
        partial = {"partial": True, "interrupted": interrupted, "stages_done": done}
        report_lib.write_json(
            out / "report.json",
            {**report, **partial, "seconds": seconds, "results": results},
            indent=None,  # 3x faster to write than indented; the whole report is indented
        )

    def build() -> str:
        built.update(runner.build(plan, seed_list))
        for name, spec in plan.experiments.items():
            for s, lam0 in zip(seed_list, built[name].initial_sharpness, strict=True):
                results["per_seed"][str(s)]["experiments"][name] = {
                    "description": spec.description(),
                    "initial_sharpness": lam0,
                    "runs": {},
                    "selected": {},
                }
        return f"{len(plan.experiments)} experiments x {num_seeds} seeds"

    def sweep(i: int, spec: SweepSpec) -> str:
        exps = [results["per_seed"][str(s)]["experiments"][spec.experiment] for s in seed_list]
        runner.run_sweep(plan, spec, built[spec.experiment], exps, bar)
        return (
            f"sweep {i + 1}/{len(plan.sweeps)}, {num_seeds} seeds x {len(spec.hyperparams)} "
            f"runs, {spec.num_steps} steps"
        )

    def measure(after_runs: bool) -> str:
        seconds.update(_measure(plan, built, seed_list, after_runs, results))
        return ", ".join(n for n, a in timed.items() if a == after_runs)

    def study(name: str) -> str:
        found = MEASUREMENTS[name].run(plan, built, plan.measurements[name], seed_list, bar)
        for s, data in zip(seed_list, found, strict=True):
            results["per_seed"][str(s)][name] = data
        return f"{num_seeds} seeds"

    work: list[tuple[str, Callable[[], str]]] = [
        *([("measurements", lambda: measure(False))] if not all(timed.values()) else []),
        ("build", build),
        *(
            (f"{s.experiment}:{s.tuner}", functools.partial(sweep, i, s))
            for i, s in enumerate(plan.sweeps)
        ),
        *([("after_runs", lambda: measure(True))] if any(timed.values()) else []),
        *((n, functools.partial(study, n)) for n in staged),
    ]
    show_bar = sys.stderr.isatty() if progress is None else progress
    with runner.Progress(num_seeds * steps, lines=progress is not False, bar=show_bar) as bar:
        try:
            for k, (key, run) in enumerate(work):
                label = f"stage {k + 1}/{len(stages)} {stages[k]}"
                bar.stage(label)
                t = time.perf_counter()
                what = run()
                took = time.perf_counter() - t
                if key not in ("measurements", "after_runs"):  # those time each measurement
                    seconds[key] = took
                done.append(stages[k])
                save_partial(False)  # before the line: a line means its stage is saved
                bar.finished(f"{label} ({what})", took)
            bar.stage(f"stage {len(stages)}/{len(stages)} {stages[-1]}")
            t = time.perf_counter()
            report = _finish(plan, report, results, out, seed_list, seconds)
            seconds["total"] = time.perf_counter() - start
            report["seconds"] = seconds
            after = compile_cache.counts()
            report["compile"] = {k: after[k] - compiled_before[k] for k in after}
            report["compile"]["cache_dir"] = compile_cache.current_dir()
            report["html"] = str(out / "report.html")
            report = report_lib.sanitize(report)
            report_lib.write_json(out / "report.json", report)
            done.append(stages[-1])  # the whole report is written: keep it on Ctrl-C
            html_report.write_html(report, out / "report.html")
            bar.finished(f"stage {len(stages)}/{len(stages)} {stages[-1]}", time.perf_counter() - t)
        except KeyboardInterrupt as err:
            bar.close()
            if len(done) < len(stages):
                save_partial(True)
            raise Interrupted(out / "report.json", len(done), len(stages)) from err
    return report


def _finish(
    plan: Plan,
    report: dict[str, Any],
    results: dict[str, Any],
    out: Path,
    seed_list: list[int],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The claims over seeds and the plots (of the first seed), added to ``report``."""
    results = report_lib.sanitize(results)
    shared = {n for n in plan.measurements if not MEASUREMENTS[n].per_seed}
    verdicts = claims_lib.evaluate_over_seeds(
        {s: seed_results(results, s) for s in seed_list}, shared=shared
    )
    report = {
        **report,
        "partial": False,
        "results": results,
        "claims": [v._asdict() for v in verdicts],
        "summary": claims_lib.summary(verdicts),
    }
    t = time.perf_counter()
    first = {"results": seed_results(results, seed_list[0])}
    report["plots"] = plots.plot_report(first, out / "plots")
    studies = [seed_results(results, s).get("minibatch") for s in seed_list]
    report["plots"] += plots_minibatch.plot_study([s for s in studies if s], out / "plots")
    seconds["plots"] = time.perf_counter() - t
    return report
