r"""The verify job's report as plain data: run labels, run summaries, JSON-safe values.

:func:`run_summary` turns a :class:`cdat_core.lab.train.TrainResult` into the dict that the
JSON report stores, :func:`cdat_core.lab.claims.evaluate_claims` reads and
:func:`cdat_core.lab.plots.plot_runs` draws; :func:`write_json` writes a report so that an
interruption never leaves half a file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cdat_core.lab import train
from cdat_core.lab.tuners import TUNERS

__all__ = ["label", "run_summary", "sanitize", "write_json"]


def label(tuner: str, hp: Mapping[str, float]) -> str:
    """The run's name in the report, e.g. ``"cdat σ=2"`` or ``"constant η=0.0462"``.

    Args:
      tuner: a name in :data:`cdat_core.lab.tuners.TUNERS` (its spec says which number and
        symbol name the run).
      hp: its numbers.

    Returns:
      The label.

    Example:
      >>> from cdat_core.lab import report
      >>> report.label("cdat", {"sigma": 2.0, "ema_decay": 0.9}), report.label("polyak", {
      ...     "max_learning_rate": 100.0})
      ('cdat σ=2', 'polyak η_max=100')
    """
    return TUNERS.lookup(tuner).run_label(hp)


def run_summary(
    result: train.TrainResult,
    *,
    tuner: str,
    hyperparams: Mapping[str, float],
    max_points: int = 500,
) -> dict[str, Any]:
    """A run as plain data for the report: per-step series thinned to ``max_points``.

    Args:
      result: the run.
      tuner: the tuner's name.
      hyperparams: its numbers.
      max_points: at most this many per-step points are kept (every k-th step).

    Returns:
      A dict with ``tuner``, ``hyperparams``, ``num_steps``, ``final_loss`` (C.3 score, on
      every step), ``initial_sharpness``, ``preconditioned``, ``seconds``, the per-step
      ``step``, ``loss``, ``learning_rate``, ``grad_norm``, ``internals`` and the per-record
      ``record_step``, ``record_loss``, ``sharpness``, ``eos``, ``sharpness_converged``,
      ``alignment``, ``instant_gap`` and the per-step ``update_cosine``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from cdat_core.lab import report, train, tuners
      >>> res = train.train(lambda w: jnp.sum(w**2), jnp.ones(2), tuners.make("cdat"),
      ...                   num_steps=4, record_every=2, key=jax.random.key(0))
      >>> s = report.run_summary(res, tuner="cdat", hyperparams={"sigma": 2.0})
      >>> s["num_steps"], s["record_step"]
      (4, [2, 4])
    """
    h = result.history
    num_steps = int(h.loss.shape[0])
    stride = max(1, -(-num_steps // max_points))
    idx = np.arange(0, num_steps, stride)

    def series(x: np.ndarray) -> list[float]:
        return np.asarray(x, np.float64).tolist()

    return {
        "tuner": tuner,
        "hyperparams": {k: float(v) for k, v in hyperparams.items()},
        "num_steps": num_steps,
        "final_loss": train.last_iterates_loss(h),
        "initial_sharpness": float(h.initial_sharpness),
        "preconditioned": bool(h.preconditioned),
        "seconds": float(h.seconds),
        "step": idx.tolist(),
        "loss": series(h.loss[idx]),
        "learning_rate": series(h.learning_rate[idx]),
        "grad_norm": series(h.grad_norm[idx]),
        "internals": {k: series(v[idx]) for k, v in h.internals.items()},
        "record_step": h.record_step.tolist(),
        "record_loss": series(h.record_loss),
        "sharpness": series(h.sharpness),
        "eos": series(h.eos),
        "sharpness_converged": np.asarray(h.sharpness_converged, bool).tolist(),
        "update_cosine": series(h.update_cosine[idx[idx < h.update_cosine.size]]),
        "alignment": series(h.alignment),
        "instant_gap": series(h.instant_gap),
    }


def sanitize(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None``, tuples lists, NumPy scalars Python.

    Args:
      value: nested dicts, lists, numbers and strings.

    Returns:
      The sanitized copy.

    Example:
      >>> import math
      >>> from cdat_core.lab import report
      >>> report.sanitize({"a": [1.0, math.inf], "b": (2, math.nan)})
      {'a': [1.0, None], 'b': [2, None]}
    """
    if isinstance(value, Mapping):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any, *, indent: int | None = 1) -> Path:
    """Write :func:`sanitize` of ``data`` as strict JSON, atomically.

    The text goes to a temporary file beside ``path`` that then replaces it, so a reader
    (or a Ctrl-C during the write) sees the old file or the new one, never half of one.

    Args:
      path: the file.
      data: nested dicts, lists, numbers and strings (non-finite floats become ``null``).
      indent: JSON indentation (``None``: one line).

    Returns:
      ``path`` as a :class:`~pathlib.Path`.

    Example:
      >>> import json, math, pathlib, tempfile
      >>> from cdat_core.lab import report
      >>> path = report.write_json(pathlib.Path(tempfile.mkdtemp()) / "r.json", {"a": math.nan})
      >>> json.loads(path.read_text())
      {'a': None}
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(sanitize(data), f, ensure_ascii=False, indent=indent, allow_nan=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
