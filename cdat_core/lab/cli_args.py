"""The command line's arguments: the parser, with defaults in its help, and the checks.

:func:`parser` builds ``cdat-core``'s parser: each option has a help text ending with its
default, and a ``type`` that rejects a bad value at parse time (``--steps -5``,
``--record-every 0``, ``--hidden 12x``, ``--sigma nan``); a usage error is one line
(``cdat-core train: error: argument --steps: must be >= 1, got -5 (see ...)``) and exit
status 2. :func:`train_paths` makes the checks that need several arguments (an option the
tuner does not use, ``--batch-size`` over ``--examples``, ``--steps`` not a multiple of
``--record-every``, an output folder under a file, a run's files already there) and names a
``train`` run's files after every argument that changes the run; :func:`check_out` is its
output check, which ``verify`` uses too. Both raise :class:`UsageError`.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import cdat_core
from cdat_core.lab.bases import BASES
from cdat_core.lab.problems import PROBLEMS
from cdat_core.lab.tuners import TUNERS

__all__ = [
    "DEFAULT_SIZES",
    "LEARNING_RATES",
    "OPTIONS",
    "UsageError",
    "check_out",
    "parser",
    "train_numbers",
    "train_paths",
]

#: The tuner numbers ``train`` sets to ``--learning-rate``, by default :math:`1/\lambda_0`.
LEARNING_RATES = ("learning_rate", "peak_learning_rate", "initial_learning_rate")
#: ``train`` option -> the tuner numbers it sets; a tuner with none of them rejects it.
OPTIONS = {"sigma": ("sigma",), "ema": ("ema_decay",), "learning_rate": LEARNING_RATES}
#: ``train --hidden`` when not given, per model (a model not listed needs ``--hidden``).
DEFAULT_SIZES = {"mlp": "128,128", "cnn": "8,16"}


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (``prog: error: message (see `prog --help`)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, except flags and options without one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _number(kind: type, low: float, *, strict: bool = False, high: float = math.inf) -> Callable:
    """An argparse ``type``: a finite ``kind`` in ``[low, high)`` (``(low, high)`` if strict)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        if value >= high:
            raise argparse.ArgumentTypeError(f"must be < {high}, got {text}")
        return value

    return parse


def _sizes(text: str) -> tuple[int, ...]:
    """An argparse ``type``: comma-separated positive integers (``--hidden``)."""
    try:
        size = tuple(int(s) for s in text.split(","))
    except ValueError:
        size = ()
    if not size or min(size) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 128,128, got {text!r}"
        )
    return size


def parser() -> argparse.ArgumentParser:
    """``cdat-core``'s parser: ``--version`` and the ``verify``, ``train``, ``list`` subcommands.

    Returns:
      The parser; its ``error`` prints one line and exits 2.

    Example:
      >>> from cdat_core.lab import cli_args
      >>> args = cli_args.parser().parse_args(["train", "--tuner", "cdat", "--hidden", "16,8"])
      >>> args.tuner, args.hidden, args.steps, args.sigma
      ('cdat', (16, 8), 1000, None)
    """
    main = _Parser(
        prog="cdat-core",
        description="Curvature-aware learning-rate tuners: reproduce the paper's findings.",
        formatter_class=_Formatter,
    )
    main.add_argument("--version", action="version", version=f"%(prog)s {cdat_core.__version__}")
    sub = main.add_subparsers(dest="command", required=True)
    at_least_1, at_least_0 = _number(int, 1), _number(int, 0)

    v = sub.add_parser(
        "verify",
        help="run the experiments and print the claims table",
        description="Run the paper's experiments from several seeds and print the claims "
        "table; write OUT/report.json (partial after each stage), OUT/plots/*.png and "
        "OUT/report.html. Exit 0 whatever the verdicts, 2 on a usage error, 130 on Ctrl-C "
        "(the finished stages stay in the partial report.json).",
        formatter_class=_Formatter,
    )
    v.add_argument("--quick", action="store_true", help="the small budget (GD only, 2 seeds)")
    v.add_argument("--out", default="cdat-core-report", help="output folder")
    v.add_argument(
        "--seed", type=at_least_0, default=0, metavar="N", help="first seed (weights, PRNG keys)"
    )
    v.add_argument(
        "--seeds",
        type=at_least_1,
        metavar="N",
        help="seeds of every experiment (default: 5, 2 with --quick)",
    )
    v.add_argument(
        "--cpu-devices",
        type=at_least_1,
        metavar="N",
        help="host CPU devices the runs are sharded over (default: the usable cores, at most "
        "8; ignored when XLA_FLAGS sets --xla_force_host_platform_device_count)",
    )
    v.add_argument("--overwrite", action="store_true", help="replace a report in --out")
    v.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    v.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (also: CDAT_CORE_NO_COMPILE_CACHE=1)",
    )

    t = sub.add_parser(
        "train",
        help="one run of one tuner, with its plot",
        description="Train the digits model with one tuner and write OUT/<run>.json and "
        "OUT/<run>.png, <run> naming every argument that changes the run. Exit 2 on a usage "
        "error (nothing computed), 130 on Ctrl-C (nothing written).",
        formatter_class=_Formatter,
    )
    t.add_argument(
        "--tuner",
        required=True,
        choices=tuple(TUNERS),
        metavar="NAME",
        help=f"one of {', '.join(TUNERS)} (see `cdat-core list`)",
    )
    t.add_argument("--base", default="gd", choices=tuple(BASES), help="base optimizer")
    t.add_argument(
        "--sigma",
        type=_number(float, 0, strict=True),
        metavar="S",
        help="σ of cdat / greedy / sharpness (default: the tuner's, see `cdat-core list`)",
    )
    t.add_argument(
        "--ema",
        type=_number(float, 0, high=1),
        metavar="BETA",
        help="CDAT's EMA β (ema_decay) in [0, 1) (default: 0)",
    )
    t.add_argument(
        "--learning-rate",
        type=_number(float, 0, strict=True),
        metavar="ETA",
        help="η of constant, peak of warmup_cosine, first η of hypergradient (default: 1/λ_0, "
        "λ_0 the initial sharpness of the Hessian)",
    )
    t.add_argument("--steps", type=at_least_1, default=1000, metavar="N", help="training steps")
    t.add_argument(
        "--record-every",
        type=at_least_1,
        default=50,
        metavar="N",
        help="steps between sharpness measurements; must divide --steps",
    )
    t.add_argument("--model", default="mlp", choices=tuple(PROBLEMS), help="problem")
    t.add_argument(
        "--hidden",
        type=_sizes,
        metavar="SIZES",
        help="the model's size, comma-separated: "
        + "; ".join(f"{name}: {spec.size}" for name, spec in PROBLEMS.items())
        + " (default: "
        + "; ".join(f"{m} {s}" for m, s in DEFAULT_SIZES.items())
        + ")",
    )
    t.add_argument(
        "--examples", type=at_least_1, default=512, metavar="N", help="first N digits examples"
    )
    t.add_argument(
        "--batch-size",
        type=at_least_1,
        metavar="N",
        help="mini-batch size, at most --examples (default: full batch)",
    )
    t.add_argument(
        "--seed", type=at_least_0, default=0, metavar="N", help="seed of the weights and keys"
    )
    t.add_argument("--out", default="cdat-core-report/train", help="output folder")
    t.add_argument("--overwrite", action="store_true", help="replace this run's files in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar or lines")

    sub.add_parser(
        "list",
        help="list tuners (with train's numbers), base optimizers, problems and budgets",
        formatter_class=_Formatter,
    )
    return main


class UsageError(Exception):
    """A bad argument found after parsing (one line, exit 2)."""


def check_out(option: str, folder: Path, files: Sequence[Path], overwrite: bool) -> None:
    """Check that ``folder`` can be made and written, and holds none of ``files``.

    Args:
      option: the option that names ``folder`` (for the message).
      folder: the output folder (it may not exist yet).
      files: the files the command will write there.
      overwrite: whether ``files`` that exist may be replaced.

    Raises:
      UsageError: a file where a folder must go, a folder not writable, or one of
        ``files`` there (an earlier run's) without ``overwrite``.

    Example:
      >>> import pathlib, tempfile
      >>> from cdat_core.lab import cli_args
      >>> tmp = pathlib.Path(tempfile.mkdtemp())
      >>> (tmp / "report.json").write_text("{}")
      2
      >>> cli_args.check_out("--out", tmp / "new" / "folder", [], False)  # may be made
      >>> cli_args.check_out("--out", tmp / "report.json" / "x", [], False)
      Traceback (most recent call last):
      ...
      cdat_core.lab.cli_args.UsageError: --out .../x: .../report.json is a file, not a folder
    """
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {folder}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{option} {folder}: {parent} is not writable")
            break
    existing = [f for f in files if f.exists()]
    if existing and not overwrite:
        raise UsageError(
            f"{existing[0]} exists (an earlier run's); pass --overwrite to replace it or "
            f"choose another {option}"
        )


def train_numbers(tuner: str, args: argparse.Namespace | None = None) -> dict[str, str]:
    r"""The numbers ``train`` runs a tuner with, as text (``"1/λ0"`` where :math:`1/\lambda_0`).

    Args:
      tuner: a name in :data:`cdat_core.lab.tuners.TUNERS`.
      args: parsed ``train`` arguments (``sigma``, ``ema``, ``learning_rate``), or ``None``
        for the defaults.

    Returns:
      name -> number (``format(x, ".10g")``: the file name tells runs apart) or ``"1/λ0"``.

    Example:
      >>> from cdat_core.lab import cli_args
      >>> cli_args.train_numbers("constant"), cli_args.train_numbers("cdat")
      ({'learning_rate': '1/λ0'}, {'sigma': '2', 'ema_decay': '0'})
    """
    numbers = {k: format(v, ".10g") for k, v in TUNERS.lookup(tuner).defaults.items()}
    numbers.update(dict.fromkeys((k for k in LEARNING_RATES if k in numbers), "1/λ0"))
    for option, names in OPTIONS.items():
        value = None if args is None else getattr(args, option)
        if value is not None:
            numbers.update({k: format(value, ".10g") for k in names if k in numbers})
    return numbers


def train_paths(args: argparse.Namespace) -> tuple[tuple[int, ...], Path, Path]:
    r"""Check ``train``'s arguments together (before any data or computation); name its files.

    The file names hold every argument that changes the run: base, tuner, its numbers
    (``inv-lambda0`` for a default :math:`1/\lambda_0`), model and size, examples, batch,
    steps, sharpness period and seed.

    Args:
      args: parsed ``train`` arguments (see :func:`parser`).

    Returns:
      ``(size, json_path, png_path)``: the model's size (``--hidden`` or the model's
      default) and the run's files in ``--out``.

    Raises:
      UsageError: an option the tuner does not use, ``--steps`` not a multiple of
        ``--record-every``, ``--batch-size`` over ``--examples``, no ``--hidden`` for a
        model without a default size, or :func:`check_out`'s errors.

    Example:
      >>> from cdat_core.lab import cli_args
      >>> args = cli_args.parser().parse_args(["train", "--tuner", "constant", "--out", "o"])
      >>> size, json_path, png_path = cli_args.train_paths(args)
      >>> size
      (128, 128)
      >>> print(json_path.name.replace("_", " "))
      gd constant learning rate=inv-lambda0 mlp128-128 512ex-full 1000steps-every50 seed0.json
    """
    spec = TUNERS.lookup(args.tuner)
    for option, names in OPTIONS.items():
        if getattr(args, option) is not None and not set(names) & set(spec.defaults):
            raise UsageError(
                f"--{option.replace('_', '-')} is not used by the {args.tuner} tuner (its "
                f"numbers: {', '.join(spec.defaults)}); see `cdat-core list`"
            )
    if args.steps % args.record_every:
        raise UsageError(
            f"--steps {args.steps} is not a multiple of --record-every {args.record_every} "
            "(the run goes in chunks of --record-every steps)"
        )
    if args.batch_size is not None and args.batch_size > args.examples:
        raise UsageError(f"--batch-size {args.batch_size} exceeds --examples {args.examples}")
    if args.hidden is None and args.model not in DEFAULT_SIZES:
        raise UsageError(f"--model {args.model} needs --hidden ({PROBLEMS[args.model].size})")
    size = args.hidden or _sizes(DEFAULT_SIZES[args.model])
    numbers = train_numbers(args.tuner, args)
    tuned = "_".join(f"{k}={v.replace('1/λ0', 'inv-lambda0')}" for k, v in numbers.items())
    batch = "full" if args.batch_size is None else f"batch{args.batch_size}"
    stem = (
        f"{args.base}_{args.tuner}_{tuned}_{args.model}{'-'.join(map(str, size))}_"
        f"{args.examples}ex-{batch}_{args.steps}steps-every{args.record_every}_seed{args.seed}"
    )
    out = Path(args.out)
    files = [out / f"{stem}.json", out / f"{stem}.png"]
    check_out("--out", out, files, args.overwrite)
    return size, files[0], files[1]
