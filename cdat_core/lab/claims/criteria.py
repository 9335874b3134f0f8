r"""The vocabulary the claims' criteria are written in: thresholds and readers of a run.

The thresholds (their reasons are in :mod:`cdat_core.lab.claims`) and functions that read a
run dict of the report (see :func:`cdat_core.lab.claims.evaluate_claims`): a series as
float64, a window of it, the appendix C.3 final loss, the change of the sharpness, the late
:math:`\eta\lambda_{\max}`, the loss at a step, and the number format of the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "ABOUT",
    "CHANGE",
    "EDGE_TOLERANCE",
    "ON_PAR",
    "Run",
    "arr",
    "final_loss",
    "fmt",
    "late_eos",
    "loss_at",
    "median",
    "sharpness_change",
    "window",
]

#: Relative change that counts as "rises" or "falls".
CHANGE = 1.1
#: Factor of "about k times".
ABOUT = 1.5
#: Factor of "on par with" (final losses).
ON_PAR = 1.25
#: Distance of :math:`\eta\lambda_{\max}` to 2 that counts as "near the edge".
EDGE_TOLERANCE = 0.2

#: A run dict of the report.
Run = Mapping[str, Any]


def arr(run: Run, name: str) -> np.ndarray:
    """A series as float64; ``None`` (a non-finite number in the JSON report) is NaN."""
    return np.asarray([math.nan if v is None else v for v in run.get(name, [])], np.float64)


def window(run: Run, name: str, start: float, stop: float) -> np.ndarray:
    """Values of a per-step series at steps in ``[start, stop)`` fractions of the run."""
    values, steps = arr(run, name), arr(run, "step")
    if values.size != steps.size:  # a series the run did not record
        return np.zeros(0)
    total = float(run.get("num_steps", steps[-1] + 1 if steps.size else 0))
    keep = (steps >= start * total) & (steps < stop * total)
    return values[keep]


def median(x: np.ndarray) -> float:
    """Median of the finite values (NaN when there are none)."""
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
    """A number as the report writes it: 4 significant digits, or ``inf`` / ``nan``."""
    return f"{x:.4g}" if math.isfinite(x) else str(x)
