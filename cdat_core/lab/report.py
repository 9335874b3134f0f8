r"""The verify job's report as plain data: run labels, run summaries, JSON-safe values.

:func:`run_summary` turns a :class:`cdat_core.lab.train.TrainResult` into the dict that the
JSON report stores, :func:`cdat_core.lab.claims.evaluate_claims` reads and
:func:`cdat_core.lab.plots.plot_runs` draws; :func:`write_json` writes a report so that an
interruption never leaves half a file; :class:`BackgroundWriter` writes the partial reports
of a long run on a worker thread, so that the run does not wait for them.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cdat_core.lab import train
from cdat_core.lab.tuners import TUNERS

__all__ = ["BackgroundWriter", "label", "run_summary", "sanitize", "snapshot", "write_json"]


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


def snapshot(value: Any) -> Any:
    """A copy of every mapping in ``value`` (other values shared), to write while it grows.

    The verify job adds runs and fields to its nested dicts stage after stage but never
    changes a list or a number it stored: copying the dicts is enough for a writer thread to
    see a fixed report, and costs far less than copying the series.

    Example:
      >>> from cdat_core.lab import report
      >>> data = {"runs": {"a": {"loss": [1.0, 0.5]}}}
      >>> copy = report.snapshot(data)
      >>> data["runs"]["b"] = {}
      >>> sorted(copy["runs"]), copy["runs"]["a"]["loss"] is data["runs"]["a"]["loss"]
      (['a'], True)
    """
    if isinstance(value, Mapping):
        return {k: snapshot(v) for k, v in value.items()}
    return value


class BackgroundWriter:
    """Writes JSON reports with :func:`write_json` on one worker thread, newest first.

    :meth:`submit` returns at once; a report still queued when a newer one is submitted is
    dropped (the newer one holds everything it had), the one being written finishes. Pass a
    :func:`snapshot` of data that keeps changing. :meth:`wait` waits for the writes and raises
    the first error of one; call it before writing the same file synchronously.

    Example:
      >>> import json, pathlib, tempfile
      >>> from cdat_core.lab import report
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.json"
      >>> writer = report.BackgroundWriter()
      >>> for stage in range(3):
      ...     writer.submit(path, {"stages_done": stage + 1})
      >>> writer.wait()
      >>> json.loads(path.read_text())
      {'stages_done': 3}
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-writer")
        self._lock = threading.Lock()
        self._futures: list[Future[Path]] = []

    def submit(self, path: str | Path, data: Any, *, indent: int | None = None) -> None:
        """Queue ``data`` for ``path``, dropping a report still queued (not yet started)."""
        with self._lock:
            if self._futures and self._futures[-1].cancel():
                self._futures.pop()
            self._futures.append(self._pool.submit(_write, path, data, indent))

    def wait(self) -> None:
        """Wait for every queued write; raise the first error of one."""
        with self._lock:
            futures, self._futures = self._futures, []
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def close(self) -> None:
        """:meth:`wait`, then stop the worker thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _write(path: str | Path, data: Any, indent: int | None) -> Path:
    return write_json(path, data, indent=indent)  # looked up when called (tests spy on it)
