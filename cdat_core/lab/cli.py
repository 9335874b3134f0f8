"""The ``cdat-core`` command line (also ``python -m cdat_core``).

Subcommands:

- ``verify [--quick] [--out DIR] [--seed N] [--seeds N] [--cpu-devices N] [--no-progress]
  [--no-compile-cache]``: the main job. Runs the paper's experiments on the bundled digits
  data from several seeds, writes ``DIR/report.json`` and ``DIR/plots/*.png``, and prints the
  claims table (each claim, the paper's statement, the test, in how many seeds it holds and
  its verdict PASS/MIXED/FAIL/N/A). JAX's persistent compilation cache is on (in
  ``~/.cache/cdat-core/jax``) unless ``--no-compile-cache`` or
  ``CDAT_CORE_NO_COMPILE_CACHE=1``; the compile time the cache saved is printed. On a
  CPU the lanes of every sweep are sharded over ``--cpu-devices`` host devices (default: the
  cores this process may use, at most 8), so every core works (see :func:`cpu_devices`). Exit
  status 0 whatever the claims say (a claim that does not reproduce is a finding, not an
  error); 2 on usage errors; 130 on Ctrl-C.
- ``train --tuner NAME [--sigma S] [--base BASE] [--model MODEL] [--steps N] ...``:
  one run with its five-panel plot and JSON.
- ``list``: tuners, base optimizers, problems and budgets.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cdat_core.lab.bases import BASES
from cdat_core.lab.problems import PROBLEMS

__all__ = ["MAX_CPU_DEVICES", "cpu_devices", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdat-core",
        description="Curvature-aware learning-rate tuners: reproduce the paper's findings.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="run the experiments and print the claims table")
    v.add_argument("--quick", action="store_true", help="small budget (< 1 min on 2 CPU cores)")
    v.add_argument("--out", default="cdat-core-report", help="output folder")
    v.add_argument(
        "--seed", type=int, default=0, help="first seed (of weights and PRNG keys); default 0"
    )
    v.add_argument(
        "--seeds",
        type=int,
        help="number of seeds of every experiment (default: 5, or 2 with --quick)",
    )
    v.add_argument(
        "--cpu-devices",
        type=int,
        help="host CPU devices the runs are sharded over (default: the usable cores, at most "
        "8; ignored when XLA_FLAGS sets --xla_force_host_platform_device_count)",
    )
    v.add_argument("--no-progress", action="store_true", help="no progress bar or stage lines")
    v.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (also: CDAT_CORE_NO_COMPILE_CACHE=1)",
    )

    t = sub.add_parser("train", help="one run of one tuner, with its plot")
    t.add_argument("--tuner", required=True, help="see `cdat-core list`")
    t.add_argument("--base", default="gd", choices=tuple(BASES))
    t.add_argument("--sigma", type=float, help="σ of cdat / greedy / sharpness")
    t.add_argument("--ema", type=float, help="CDAT EMA β (ema_decay)")
    t.add_argument(
        "--learning-rate",
        type=float,
        help="η of constant, peak of warmup_cosine (default: 1/λ_0, the initial sharpness)",
    )
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--record-every", type=int, default=50)
    t.add_argument("--model", default="mlp", choices=tuple(PROBLEMS))
    t.add_argument(
        "--hidden",
        default="128,128",
        help="the model's size: "
        + "; ".join(f"{name}: {spec.size}" for name, spec in PROBLEMS.items()),
    )
    t.add_argument("--examples", type=int, default=512, help="first N digits examples")
    t.add_argument("--batch-size", type=int, help="mini-batch size (default: full batch)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="cdat-core-report/train")
    t.add_argument("--no-progress", action="store_true")

    sub.add_parser("list", help="list tuners, base optimizers, problems and budgets")
    return parser


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
    import os

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
    if args.seeds is not None and args.seeds < 1:
        print(f"--seeds must be >= 1, got {args.seeds}", file=sys.stderr)
        return 2
    try:
        cpu_devices(args.cpu_devices)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    from cdat_core.lab import compile_cache

    cache = None
    if not (args.no_compile_cache or compile_cache.disabled_by_env()):
        cache = compile_cache.enable()
    from cdat_core.lab import claims, verify

    budget = "quick" if args.quick else "full"
    report = verify.run_verify(
        budget,
        args.out,
        seed=args.seed,
        seeds=args.seeds,
        progress=False if args.no_progress else None,
    )
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
        f"{Path(args.out) / 'report.json'}; {len(report['plots'])} plots in "
        f"{Path(args.out) / 'plots'}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import jax
    from tqdm.auto import tqdm

    from cdat_core.lab import bases, plots, problems, report, train, tuners

    if args.tuner not in tuners.TUNERS:
        print(
            f"unknown tuner {args.tuner!r}; choose one of {', '.join(tuners.TUNERS)}",
            file=sys.stderr,
        )
        return 2
    size = tuple(int(s) for s in args.hidden.split(",") if s)
    problem = problems.PROBLEMS.lookup(args.model).build(
        size, num_examples=args.examples, seed=args.seed
    )
    data = (problem.inputs, problem.targets)
    key = jax.random.key(args.seed)
    lam0 = train.initial_sharpness(problem.loss, problem.params, data, key=key)
    spec = tuners.TUNERS.lookup(args.tuner)
    hp = dict(spec.defaults)
    if args.sigma is not None and "sigma" in hp:
        hp["sigma"] = args.sigma
    if args.ema is not None and "ema_decay" in hp:
        hp["ema_decay"] = args.ema
    for name in ("learning_rate", "peak_learning_rate"):
        if name in hp:
            hp[name] = args.learning_rate if args.learning_rate is not None else 1.0 / lam0
    if "initial_learning_rate" in hp:
        hp["initial_learning_rate"] = 1.0 / lam0
    static = {"num_steps": args.steps} if "num_steps" in spec.static else {}
    bar = tqdm(
        total=args.steps,
        unit="step",
        file=sys.stderr,
        disable=args.no_progress or not sys.stderr.isatty(),
    )
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
    bar.close()
    name = report.label(args.tuner, hp)
    summary = report.sanitize(report.run_summary(result, tuner=args.tuner, hyperparams=hp))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.base}_{args.tuner}"
    with open(out / f"{stem}.json", "w", encoding="utf-8") as f:
        json.dump({"label": name, "base": args.base, **summary}, f, ensure_ascii=False)
    png = plots.plot_runs(
        {f"{args.base} {name}": summary},
        out / f"{stem}.png",
        title=f"{args.model} {args.hidden}, {args.examples} examples",
        edge=BASES[args.base].edge,
    )
    h = result.history
    print(
        f"{args.base} {name}: initial sharpness {lam0:.4g}; final loss (mean of last 5) "
        f"{train.last_iterates_loss(h):.4g}; last η {h.learning_rate[-1]:.4g}; last λ_max "
        f"{h.sharpness[-1]:.4g}; last ηλ_max {h.eos[-1]:.4g}"
    )
    print(f"wrote {out / (stem + '.json')} and {png}")
    return 0


def _list() -> int:
    from cdat_core.lab import tuners, verify

    print("tuners:", ", ".join(tuners.TUNERS))
    for name, spec in tuners.TUNERS.items():
        numbers = ", ".join(f"{k}={v:g}" for k, v in spec.defaults.items())
        print(f"  {name}: {numbers}  ({spec.rule})")
    print("base optimizers:", ", ".join(BASES))
    print("problems:", ", ".join(PROBLEMS))
    print("verify budgets:", ", ".join(verify.PLANS), "(--quick selects quick)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cdat-core``: parse ``argv`` and run the subcommand.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The exit status.

    Example:
      >>> from cdat_core.lab import cli
      >>> cli.main(["list"])  # doctest: +ELLIPSIS
      tuners: constant, warmup_cosine, linesearch, greedy, cdat, ...
      0
    """
    args = _parser().parse_args(argv)
    if args.command == "verify":
        try:
            return _verify(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    if args.command == "train":
        return _train(args)
    return _list()
