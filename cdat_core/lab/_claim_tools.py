"""Shared pieces of the claims modules: the Claim record, thresholds, run readers.

See :mod:`cdat_core.lab.claims` for the public interface and the threshold conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

#: Relative change that counts as "rises" or "falls".
CHANGE = 1.1
#: Factor of "about k times".
ABOUT = 1.5
#: Factor of "on par with" (final losses).
ON_PAR = 1.25
#: Distance of :math:`\eta\lambda_{\max}` to 2 that counts as "near the edge".
EDGE_TOLERANCE = 0.2

Run = Mapping[str, Any]
Outcome = tuple[bool, str, dict[str, float]] | None


class Claim(NamedTuple):
    """One claim of the paper, the test applied, and what was measured.

    Attributes:
      id: short identifier, e.g. ``"F1.greedy.lr_falls"``.
      group: ``"identity"``, ``"finding 1"``, ..., ``"model"``, ``"cost"``.
      statement: the paper's statement (with its figure or equation).
      criterion: the test, with its threshold.
      measured: what was measured, in words and numbers.
      passed: True (PASS), False (FAIL) or None (N/A: not evaluated, e.g. not in this budget).
      values: the numbers behind ``measured``.
      source: which experiment and budget produced the numbers.
    """

    id: str
    group: str
    statement: str
    criterion: str
    measured: str
    passed: bool | None
    values: dict[str, float]
    source: str

    @property
    def status(self) -> str:
        """``"PASS"``, ``"FAIL"`` or ``"N/A"``."""
        return "N/A" if self.passed is None else ("PASS" if self.passed else "FAIL")


def arr(run: Run, name: str) -> np.ndarray:
    """A series as float64; ``None`` (a non-finite number in the JSON report) is NaN."""
    return np.asarray([math.nan if v is None else v for v in run.get(name, [])], np.float64)


def window(run: Run, name: str, start: float, stop: float) -> np.ndarray:
    """Values of a per-step series at steps in ``[start, stop)`` fractions of the run."""
    values, steps = arr(run, name), arr(run, "step")
    total = float(run.get("num_steps", steps[-1] + 1 if steps.size else 0))
    keep = (steps >= start * total) & (steps < stop * total)
    return values[keep]


def median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def final_loss(run: Run) -> float:
    """The appendix C.3 score of a run (``inf`` when missing or not finite)."""
    value = run.get("final_loss")
    value = math.inf if value is None else float(value)
    return value if math.isfinite(value) else math.inf


def sharpness_change(run: Run) -> tuple[float, float]:
    """(first, last) finite recorded sharpness."""
    lam = arr(run, "sharpness")
    lam = lam[np.isfinite(lam)]
    return (float(lam[0]), float(lam[-1])) if lam.size else (math.nan, math.nan)


def late_eos(run: Run, start: float = 0.5) -> float:
    """Median of ηλ over the records in the last ``1 - start`` of the run."""
    eos, steps = arr(run, "eos"), arr(run, "record_step")
    total = float(run.get("num_steps", steps[-1] if steps.size else 0))
    return median(eos[steps > start * total])


def loss_at(run: Run, step: int, last: int = 5) -> float:
    """Mean loss of the recorded steps in ``[step - last, step)`` (else the nearest before)."""
    losses, steps = arr(run, "loss"), arr(run, "step")
    keep = (steps >= step - last) & (steps < step)
    if not keep.any():
        keep = steps == steps[steps < step].max() if (steps < step).any() else keep
    value = float(np.mean(losses[keep])) if keep.any() else math.inf
    return value if math.isfinite(value) else math.inf


def fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


class Context:
    """The results, with helpers to find runs and to build claims."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.results = results
        self.budget = str(results.get("budget", "?"))

    def experiment(self, name: str) -> Mapping[str, Any] | None:
        return self.results.get("experiments", {}).get(name)

    def run(self, experiment: str, label: str) -> Run | None:
        exp = self.experiment(experiment)
        if exp is None:
            return None
        return exp.get("runs", {}).get(label)

    def selected(self, experiment: str, tuner: str) -> Run | None:
        exp = self.experiment(experiment)
        if exp is None:
            return None
        label = exp.get("selected", {}).get(tuner)
        return None if label is None else exp.get("runs", {}).get(label)

    def source(self, experiment: str, *labels: str) -> str:
        exp = self.experiment(experiment) or {}
        where = exp.get("description", experiment)
        return f"{self.budget}: {where}" + (f" [{', '.join(labels)}]" if labels else "")


def make_claim(
    id: str,
    group: str,
    statement: str,
    criterion: str,
    evaluate: Callable[[], Outcome],
    source: str,
) -> Claim:
    """Build a claim; ``evaluate`` returns ``None`` when the data is missing (N/A)."""
    out = evaluate()
    if out is None:
        return Claim(
            id, group, statement, criterion, "not evaluated in this budget", None, {}, source
        )
    passed, measured, values = out
    return Claim(id, group, statement, criterion, measured, bool(passed), values, source)
