r"""A plan's experiments over seeds: problems per seed, sweeps as seeds x grid lanes, progress.

For each experiment of a :class:`~cdat_core.lab.plans.Plan` and each seed, :func:`build` makes
the problem (the seed sets the initial weights; the data is the same for every seed), its
initial sharpness :math:`\lambda_0` and its PRNG key (:func:`experiment_key`: folded with a
stable hash of the experiment's *name*, so dropping an experiment from a plan changes no other
experiment's numbers). :func:`run_sweep` runs one sweep for every seed at once: the lanes seeds
x grid points go through one compiled program (:func:`cdat_core.lab.train.run_lanes`, sharded
over the local devices); relative numbers are scaled by each seed's :math:`\lambda_0`; the
appendix C.3 selection (best mean loss of the last 5 iterates) is made per seed, and a seed
whose best point is at an end of a power-of-2 grid gets that grid widened (all such seeds in one
call). Lanes go a seed count at a time (:func:`~cdat_core.lab.train.run_lanes`'s
``lanes_per_call``), so each tuner of an experiment, grid and widenings alike, is one compiled
program. With ``plan.spectra`` (the full budget), on the first seed of the experiment
:data:`cdat_core.lab.spectra.EXPERIMENT`, the Hessian spectral density is measured at
:math:`w_0` (``spectrum_start``) and at the end of the tuned constant, σ=1 and σ=2 CDAT runs
(their ``spectrum_end``). :class:`Progress` drives a tqdm bar on a terminal and prints
timestamped lines (stage, lane-steps done/total, ETA) that a log file can read: per stage, and
at least every 30 s within one when there is no bar.
"""

from __future__ import annotations

import sys
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple, TextIO

import jax

from cdat_core.lab import bases, spectra, train, tuners
from cdat_core.lab import report as report_lib
from cdat_core.lab.plans import Plan, SweepSpec

__all__ = [
    "MAX_GRID_EXTENSIONS",
    "Built",
    "Progress",
    "build",
    "duration",
    "experiment_key",
    "run_sweep",
]

#: How many times a grid whose best point is at an end is extended (see
#: :class:`~cdat_core.lab.plans.SweepSpec`).
MAX_GRID_EXTENSIONS = 3


class Built(NamedTuple):
    r"""One experiment, built for every seed (lists in seed order).

    Attributes:
      problems: the problem of each seed (same data, the seed's initial weights).
      initial_sharpness: :math:`\lambda_0` of each seed.
      keys: the PRNG key of each seed (:func:`experiment_key`).
    """

    problems: list[Any]
    initial_sharpness: list[float]
    keys: list[jax.Array]


def experiment_key(seed: int, name: str) -> jax.Array:
    """The PRNG key of experiment ``name`` for ``seed``: a stable hash of the name, not its index.

    Example:
      >>> import jax
      >>> from cdat_core.lab import runner
      >>> a, b = runner.experiment_key(0, "gd"), runner.experiment_key(0, "adam")
      >>> bool((jax.random.key_data(a) == jax.random.key_data(runner.experiment_key(0, "gd"))
      ...       ).all()), bool((jax.random.key_data(a) == jax.random.key_data(b)).all())
      (True, False)
    """
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def build(plan: Plan, seeds: Sequence[int]) -> dict[str, Built]:
    """Every experiment of ``plan`` for every seed of ``seeds``."""
    built = {}
    for name, spec in plan.experiments.items():
        problems, lams, keys = [], [], []
        for seed in seeds:
            problem = spec.build(seed)
            key = experiment_key(seed, name)
            lam0 = train.initial_sharpness(
                problem.loss, problem.params, (problem.inputs, problem.targets), key=key
            )
            problems.append(problem)
            lams.append(lam0)
            keys.append(key)
        built[name] = Built(problems, lams, keys)
    return built


def chunks(num_steps: int, record_every: int) -> int:
    """Steps a run of ``num_steps`` takes (rounded up to whole chunks)."""
    return -(-num_steps // record_every) * record_every


def duration(seconds: float) -> str:
    """Seconds in words for progress lines: ``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``.

    Example:
      >>> from cdat_core.lab import runner
      >>> runner.duration(42.4), runner.duration(185), runner.duration(3720), runner.duration(
      ...     float("nan"))
      ('42 s', '3 min 05 s', '1 h 02 min', '?')
    """
    if not seconds == seconds or seconds < 0:  # NaN: nothing done yet
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """A job's progress: a tqdm bar on a terminal, plain timestamped lines for a log file.

    With ``lines``, a line goes to ``stream`` when a stage finishes (:meth:`finished`); with
    ``lines`` and no ``bar`` (stderr is not a terminal: nox, CI, ``nohup``), a line also goes
    when a stage starts and at least every ``interval`` seconds within a stage, written by a
    daemon thread, so a long compilation shows up too. Each line reads ``YYYY-MM-DD HH:MM:SS
    [ pc%] text``: the stage, the lane-steps done/total and elapsed time with an ETA (which
    assumes the remaining lane-steps cost what the done ones did on average). Use it as a
    context manager, or call :meth:`close`, to stop the thread.

    Example:
      >>> import io
      >>> from cdat_core.lab import runner
      >>> out = io.StringIO()
      >>> with runner.Progress(400, lines=True, bar=False, stream=out) as p:
      ...     p.stage("stage 1/2 gd: cdat")
      ...     p.update(100)
      >>> print(out.getvalue()[20:])  # after the timestamp
      [  0%] stage 1/2 gd: cdat started; elapsed 0 s
      <BLANKLINE>
    """

    def __init__(
        self,
        total: int,
        *,
        lines: bool,
        bar: bool,
        stream: TextIO | None = None,
        interval: float = 30.0,
    ):
        from tqdm.auto import tqdm

        stream = sys.stderr if stream is None else stream
        self.total, self.done, self.lines, self.stream = total, 0, lines, stream
        self.interval, self.text = interval, ""
        self.start = time.perf_counter()
        self._last = time.monotonic()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.bar = tqdm(total=total, unit="step", disable=not bar, file=stream, dynamic_ncols=True)
        self._thread = None
        if lines and not bar and interval > 0:
            self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._thread.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, steps: int) -> None:
        """More steps planned (a widened grid)."""
        self.total += steps
        self.bar.total = self.total

    def update(self, steps: int) -> None:
        """``steps`` lane-steps done."""
        self.done += steps
        self.bar.update(steps)

    def stage(self, text: str) -> None:
        """Name the stage in progress (a line when lines are on and no bar is shown)."""
        self.text = text
        self.bar.set_description(text)
        if self.lines and self.bar.disable:
            self.write(f"{text} started; elapsed {duration(self.elapsed())}")

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def status(self) -> str:
        """The stage, the lane-steps done/total, the elapsed time and the ETA."""
        elapsed = self.elapsed()
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        return (
            f"{self.text}: {self.done:,}/{self.total:,} lane-steps; elapsed "
            f"{duration(elapsed)}, ETA {duration(eta)}"
        )

    def write(self, text: str) -> None:
        """One timestamped line: ``YYYY-MM-DD HH:MM:SS [ pc%] text``."""
        percent = 100.0 * self.done / max(self.total, 1)
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{percent:3.0f}%] {text}"
        with self._lock:
            self.bar.write(line, file=self.stream)
            self.stream.flush()
            self._last = time.monotonic()

    def finished(self, text: str, seconds: float) -> None:
        """Report a finished stage, its time, the elapsed time and the ETA."""
        if not self.lines:
            return
        elapsed = self.elapsed()
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        self.write(
            f"{text} in {duration(seconds)}; elapsed {duration(elapsed)}, ETA {duration(eta)}"
        )

    def _beat(self) -> None:
        while True:
            with self._lock:
                due = self._last + self.interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            with self._lock:
                if time.monotonic() >= self._last + self.interval and not self._stop.is_set():
                    self.write(self.status())

    def close(self) -> None:
        """Stop the line thread and close the bar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.bar.close()


def _resolve(sweep: SweepSpec, lam0: float) -> list[dict[str, float]]:
    out = []
    for hp in sweep.hyperparams:
        numbers = {**tuners.TUNERS.lookup(sweep.tuner).defaults, **hp}
        for name in sweep.relative:
            numbers[name] = numbers[name] / lam0
        out.append(numbers)
    return out


def _lanes(
    plan: Plan,
    sweep: SweepSpec,
    built: Built,
    lanes: list[tuple[int, dict[str, float]]],
    progress: Progress,
    lanes_per_call: int,
) -> list[train.TrainResult]:
    """Run ``lanes`` (seed index, numbers) of ``sweep`` in one call."""
    spec = plan.experiments[sweep.experiment]
    first = built.problems[0]
    return train.run_lanes(
        first.loss,
        [built.problems[s].params for s, _ in lanes],
        tuners.factory(sweep.tuner, spec.base, **dict(sweep.static)),
        [hp for _, hp in lanes],
        [built.keys[s] for s, _ in lanes],
        num_steps=sweep.num_steps,
        data=(first.inputs, first.targets),
        record_every=plan.record_every,
        sharpness_iters=plan.sharpness_iters,
        preconditioner=bases.preconditioner(spec.base),
        progress=progress.update,
        vectorize=spec.vectorize and tuners.TUNERS.lookup(sweep.tuner).vectorize,
        lanes_per_call=lanes_per_call,
        # Fig. 16's instant gap (greedy vs on-edge from the same iterate), for CDAT on GD.
        instant=sweep.tuner == "cdat" and spec.base == "gd",
    )


def run_sweep(
    plan: Plan, sweep: SweepSpec, built: Built, exps: Sequence[dict[str, Any]], progress: Progress
) -> None:
    """Run ``sweep`` for every seed (widening grids per seed, C.3) and record it in ``exps``.

    Args:
      plan: the plan.
      sweep: the sweep.
      built: its experiment, for every seed.
      exps: each seed's experiment dict of the results (``runs``, ``selected``, ...).
      progress: the progress reporter.
    """
    num_seeds = len(built.problems)
    hps = [_resolve(sweep, lam0) for lam0 in built.initial_sharpness]
    flat = [(s, hp) for s in range(num_seeds) for hp in hps[s]]
    # a seed count of lanes per call (at least one per device): widenings fit in one call
    per_call = max(num_seeds, len(jax.local_devices()))
    results = _lanes(plan, sweep, built, flat, progress, per_call)
    runs: list[list[train.TrainResult]] = [[] for _ in range(num_seeds)]
    for (s, _), res in zip(flat, results, strict=True):
        runs[s].append(res)
    best = [0] * num_seeds
    extended = [0] * num_seeds
    if sweep.select:
        picks = [tuners.select_best([r.history for r in rs]) for rs in runs]
        # Appendix C.3: a grid is widened until its best point is inside it (per seed).
        while sweep.extend:
            todo = [
                s
                for s, (b, inside) in enumerate(picks)
                if not inside and extended[s] < MAX_GRID_EXTENSIONS
            ]
            if not todo:
                break
            new = []
            for s in todo:
                b = picks[s][0]
                up = b == len(hps[s]) - 1
                point = hps[s][b]
                factor = 2.0 if up else 0.5
                new.append((s, up, {**point, sweep.extend: point[sweep.extend] * factor}))
            progress.add(len(new) * chunks(sweep.num_steps, plan.record_every))
            more = _lanes(plan, sweep, built, [(s, hp) for s, _, hp in new], progress, per_call)
            for (s, up, hp), res in zip(new, more, strict=True):
                hps[s], runs[s] = (
                    ([*hps[s], hp], [*runs[s], res]) if up else ([hp, *hps[s]], [res, *runs[s]])
                )
                extended[s] += 1
                picks[s] = tuners.select_best([r.history for r in runs[s]])
        best = [b for b, _ in picks]
        for s, exp in enumerate(exps):
            exp.setdefault("grid_extensions", {})[sweep.tuner] = extended[s]
            exp.setdefault("best_inside_grid", {})[sweep.tuner] = picks[s][1]
    spec = tuners.TUNERS.lookup(sweep.tuner)
    for s, exp in enumerate(exps):
        labels = [spec.run_label(hp) for hp in hps[s]]
        for lab, hp, res in zip(labels, hps[s], runs[s], strict=True):
            exp["runs"][lab] = report_lib.run_summary(res, tuner=sweep.tuner, hyperparams=hp)
        if sweep.select:
            exp["selected"][sweep.tuner] = labels[best[s]]
        for name, numbers in spec.designates.items():
            lab = spec.run_label(numbers)
            if lab in exp["runs"]:
                exp["selected"][name] = lab
    if plan.spectra and sweep.experiment == spectra.EXPERIMENT and exps:
        _spectra(sweep, built, exps[0], hps[0], runs[0], best[0])


def _spectra(
    sweep: SweepSpec,
    built: Built,
    exp: dict[str, Any],
    hps: list[dict[str, float]],
    runs: list[train.TrainResult],
    best: int,
) -> None:
    """Hessian spectral densities (first seed): at w_0 once, at the end of the wanted runs."""
    first = built.problems[0]
    data = (first.inputs, first.targets)
    key = jax.random.fold_in(built.keys[0], 17)
    spec = tuners.TUNERS.lookup(sweep.tuner)
    for i, (hp, res) in enumerate(zip(hps, runs, strict=True)):
        chosen = sweep.select and sweep.tuner == "constant" and i == best
        if spectra.wanted(sweep.tuner, hp, chosen):
            if "spectrum_start" not in exp:
                exp["spectrum_start"] = spectra.density(first.loss, first.params, data, key)
            run = exp["runs"][spec.run_label(hp)]
            run["spectrum_end"] = spectra.density(first.loss, res.params, data, key)
