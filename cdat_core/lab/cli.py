"""The ``cdat-core`` command line (also ``python -m cdat_core``); ``cdat-core --version``.

Subcommands (``cdat-core SUBCOMMAND --help`` lists every option with its default):

- ``verify [--quick] [--out DIR] [--seed N] [--seeds N] [--cpu-devices N] [--overwrite]
  [--no-progress] [--no-compile-cache]``: the main job. Runs the paper's experiments on the
  bundled digits data from several seeds, writes ``DIR/report.json`` (rewritten, partial,
  as each stage finishes), ``DIR/plots/*.png`` and a self-contained ``DIR/report.html``,
  and prints the claims table (each claim, the paper's statement, the test, in how many
  seeds it holds and its verdict PASS/MIXED/FAIL/N/A). Progress: a bar on a terminal,
  timestamped lines otherwise (see :class:`cdat_core.lab.runner.Progress`). JAX's
  persistent compilation cache is on (in ``~/.cache/cdat-core/jax``) unless
  ``--no-compile-cache`` or ``CDAT_CORE_NO_COMPILE_CACHE=1``. On a CPU the lanes of every
  sweep are sharded over ``--cpu-devices`` host devices (default: the cores this process
  may use, at most 8; see :func:`cpu_devices`). Exit status 0 whatever the claims say (a
  claim that does not reproduce is a finding, not an error).
- ``train --tuner NAME [--base BASE] [--sigma S] [--ema B] [--learning-rate ETA] [--steps N]
  ...``: one run with its five-panel plot and JSON, named after every argument that
  changes the run (``gd_cdat_sigma=2_ema_decay=0_mlp128-128_512ex-full_1000steps-every50
  _seed0.json``).
- ``list``: tuners with the numbers ``train`` uses, base optimizers, problems, budgets.

Every argument is checked before any computation (:mod:`cdat_core.lab.cli_args`): a bad
one prints one line (``cdat-core train: error: argument --steps: must be >= 1, got -5 (see
...)``) and exits 2, as does an option the chosen tuner does not use (``--sigma`` with
``constant``) and an output that an earlier run wrote (unless ``--overwrite``). Ctrl-C
exits 130 with a message; ``verify`` keeps the stages that finished in a partial
``report.json``. Every printed sharpness says whether it is preconditioned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cdat_core.lab import cli_args
from cdat_core.lab.bases import BASES
from cdat_core.lab.cli_args import LEARNING_RATES, OPTIONS, UsageError, check_out, train_numbers
from cdat_core.lab.problems import PROBLEMS
from cdat_core.lab.tuners import TUNERS

__all__ = ["MAX_CPU_DEVICES", "cpu_devices", "main"]

_NOT_PRECONDITIONED = "Hessian, not preconditioned"
_PRECONDITIONED = "preconditioned: P^-1/2 H P^-1/2, P = sqrt(ν̂) + ε of the base optimizer"

#: The most host CPU devices ``verify`` shards over by default.
MAX_CPU_DEVICES = 8
_FORCE_FLAG = "--xla_force_host_platform_device_count"


def cpu_devices(requested: int | None = None) -> int | None:
    """Split the host CPU into ``requested`` JAX devices (default: the usable cores, at most 8).

    XLA runs one program per device on its own thread, while the small matrix products of one
    device's program hardly use a second core; sharding the vmapped lanes over one device per
    core made a sweep of the full budget 1.4-1.6x faster on 2 cores. Must run before JAX
    initialises its backends (before any computation); does nothing when ``XLA_FLAGS``
    already sets ``--xla_force_host_platform_device_count`` (the user's choice wins) or when
    the backends are already up (in a Python session that ran JAX code: the devices stay).

    Args:
      requested: the device count, or ``None`` for the default.

    Returns:
      The count set, or ``None`` when ``XLA_FLAGS`` or running backends decided it.

    Raises:
      ValueError: ``requested`` < 1.
    """
    import jax

    if requested is not None and requested < 1:
        raise ValueError(f"--cpu-devices must be >= 1, got {requested}")
    if _FORCE_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    if requested is None:
        usable = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        )
        requested = max(1, min(usable or 1, MAX_CPU_DEVICES))
    try:
        jax.config.update("jax_num_cpu_devices", requested)
    except RuntimeError:  # backends already initialised
        return None
    return requested


def _verify(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out("--out", out, [out / "report.json", out / "report.html"], args.overwrite)
    cpu_devices(args.cpu_devices)
    from cdat_core.lab import compile_cache

    cache = None
    if not (args.no_compile_cache or compile_cache.disabled_by_env()):
        cache = compile_cache.enable()
    from cdat_core.lab import claims, verify

    budget = "quick" if args.quick else "full"
    try:
        report = verify.run_verify(
            budget,
            out,
            seed=args.seed,
            seeds=args.seeds,
            progress=False if args.no_progress else None,
        )
    except verify.Interrupted as stop:
        print(
            f"interrupted: {stop.stages_done}/{stop.stages_total} stages finished; their "
            f'results are in {stop.path} ("partial": true)',
            file=sys.stderr,
        )
        return 130
    rebuilt = [claims.Verdict(**c) for c in report["claims"]]
    print(claims.format_table(rebuilt))
    compiled = report["compile"]
    saved = (
        f"persistent cache {cache}: {compiled['cache_hits']:.0f} hits saved "
        f"{compiled['seconds_saved']:.1f} s of compilation"
        if cache is not None
        else "persistent cache off"
    )
    print(
        f"\nbudget {budget}, seeds {report['seeds']}: {report['seconds']['total']:.1f} s; "
        f"{compiled['programs']:.0f} XLA programs, {compiled['compile_seconds']:.1f} s "
        f"compiling; {saved}\nverdict rule: {report['verdict_rule']}\nreport "
        f"{out / 'report.json'} and {report['html']}; {len(report['plots'])} plots in "
        f"{out / 'plots'}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    size, path, png_path = cli_args.train_paths(args)
    import jax

    from cdat_core.lab import bases, plots, report, runner, train, tuners

    try:
        problem = PROBLEMS.lookup(args.model).build(
            size, num_examples=args.examples, seed=args.seed
        )
    except (ValueError, TypeError) as err:
        raise UsageError(
            f"--hidden {','.join(map(str, size))}: not a {args.model} size "
            f"({PROBLEMS[args.model].size}): {err}"
        ) from None
    if problem.inputs.shape[0] < args.examples:
        raise UsageError(
            f"--examples {args.examples} exceeds the {problem.inputs.shape[0]} examples of the data"
        )
    data = (problem.inputs, problem.targets)
    key = jax.random.key(args.seed)
    lam0 = train.initial_sharpness(problem.loss, problem.params, data, key=key)
    spec = tuners.TUNERS.lookup(args.tuner)
    given = {k: getattr(args, o) for o, ks in OPTIONS.items() for k in ks}
    hp = {**spec.defaults, **{k: 1.0 / lam0 for k in LEARNING_RATES if k in spec.defaults}}
    hp.update({k: v for k, v in given.items() if k in hp and v is not None})
    static = {"num_steps": args.steps} if "num_steps" in spec.static else {}
    name = f"{args.base} {report.label(args.tuner, hp)}"
    tty = sys.stderr.isatty()
    with runner.Progress(
        args.steps, lines=not args.no_progress, bar=tty and not args.no_progress
    ) as bar:
        bar.stage(f"train {name}")
        (result,) = train.sweep(
            problem.loss,
            problem.params,
            tuners.factory(args.tuner, args.base, **static),
            [hp],
            num_steps=args.steps,
            data=data,
            record_every=args.record_every,
            key=key,
            batch_size=args.batch_size,
            preconditioner=bases.preconditioner(args.base),
            progress=bar.update,
        )
        bar.finished(f"train {name}: {args.steps:,} steps", bar.elapsed())
    h = result.history
    kind = _PRECONDITIONED if h.preconditioned else _NOT_PRECONDITIONED
    summary = report.sanitize(report.run_summary(result, tuner=args.tuner, hyperparams=hp))
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "label": name,
        "base": args.base,
        "arguments": vars(args),
        "lambda0": lam0,  # λ0 of the learning rates' default 1/λ0, of the Hessian
        "sharpness_kind": kind,  # of "sharpness" (λ_max)
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**record, **summary}, f, ensure_ascii=False)
    hidden = ",".join(map(str, size))
    png = plots.plot_runs(
        {name: summary},
        png_path,
        title=f"{args.model} {hidden}, {args.examples} examples; λ_max: {kind}",
        edge=BASES[args.base].edge,
    )
    print(
        f"{name}: initial sharpness λ_0 {lam0:.4g} ({_NOT_PRECONDITIONED}); final loss (mean "
        f"of last 5) {train.last_iterates_loss(h):.4g}; last η {h.learning_rate[-1]:.4g}; last "
        f"λ_max {h.sharpness[-1]:.4g} and ηλ_max {h.eos[-1]:.4g} ({kind})"
    )
    print(f"wrote {path} and {png}")
    return 0


def _list() -> int:
    from cdat_core.lab import plans

    print("tuners, with the numbers `cdat-core train` uses (λ0: the initial sharpness):")
    for name, spec in TUNERS.items():
        options = {k: f"--{o.replace('_', '-')}" for o, ks in OPTIONS.items() for k in ks}
        numbers = ", ".join(
            f"{k}={v}" + (f" ({options[k]})" if k in options else "")
            for k, v in train_numbers(name).items()
        )
        fixed = {k: "--steps" if k == "num_steps" else v for k, v in spec.static.items()}
        settings = "; fixed " + ", ".join(f"{k}={v}" for k, v in fixed.items()) if fixed else ""
        print(f"  {name}: {numbers}{settings}  [{spec.rule}]")
    print("base optimizers (at learning rate 1):")
    for name, base in BASES.items():
        kind = _NOT_PRECONDITIONED if base.preconditioner is None else _PRECONDITIONED
        print(f"  {name}: {base.description}; sharpness {kind}; edge ηλ_max = {base.edge:g}")
    print("problems:", ", ".join(PROBLEMS))
    for name, problem in PROBLEMS.items():
        default = cli_args.DEFAULT_SIZES.get(name, "none (required)")
        print(f"  {name}: --hidden = {problem.size}, default {default}")
    budgets = ", ".join(f"{b} ({plans.CATALOGS[b]().seeds} seeds)" for b in plans.BUDGETS)
    print(f"verify budgets: {budgets} (--quick selects quick)")
    return 0


_COMMANDS = {"verify": _verify, "train": _train, "list": lambda args: _list()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cdat-core``: parse ``argv``, check it, and run the subcommand.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The exit status: 0, 2 for a usage error (one line on stderr), 130 on Ctrl-C.

    Example:
      >>> from cdat_core.lab import cli
      >>> cli.main(["list"])  # doctest: +ELLIPSIS
      tuners, with the numbers `cdat-core train` uses (λ0: the initial sharpness):
        constant: learning_rate=1/λ0 (--learning-rate)  [η, tuned on a grid (appendix C.3)]
      ...
      0
      >>> cli.main(["--version"])  # doctest: +ELLIPSIS
      cdat-core 0...
      0
    """
    try:
        args = cli_args.parser().parse_args(argv)
    except SystemExit as stop:  # argparse: --help, --version, a usage error
        code = stop.code
        return code if isinstance(code, int) else 0 if code is None else 1
    try:
        return int(_COMMANDS[args.command](args))
    except UsageError as err:
        print(f"cdat-core {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); nothing written", file=sys.stderr)
        return 130
