r"""The mini-batch study (Section 3.1 "Mini-batch regime", Fig. 7, 8, 14, 20, 21; App. C.5).

:func:`run_study` trains a small tanh MLP on scikit-learn's digits, with a held-out test
split (:func:`digits_split`), by SGD with momentum 0.9 at every batch size of a
:class:`Study`, for the same number of epochs at each, from every seed (a seed sets the
initial weights and the order of the examples, :func:`data_order`), with

- CDAT over a grid of :math:`\sigma` and EMA :math:`\beta_{cdat}`, :math:`n_t` and
  :math:`d_t` evaluated on the current mini-batch (:math:`\sigma = 1`, :math:`\beta = 0` is
  the greedy rule);
- a constant learning rate on the grid :math:`\{\eta_m 2^i\}` and a linear warm-up + cosine
  decay schedule (warm-up fraction 0.1, from and to 0) with peak on
  :math:`\{\eta_m 2^i\}`, each selected per seed and batch size; :math:`\eta_m = \eta_{ref}
  \sqrt{m / m_{ref}}` for batch size :math:`m`, centred as in appendix C.5 (where
  :math:`\eta_m = 10^{-4}\sqrt{m/4096}`), :math:`\eta_{ref}` chosen for this problem;
- the lab's backtracking linesearch, :math:`c` selected per seed and batch size.

Runs that differ in traced numbers only (seeds, :math:`\sigma`, :math:`\beta`, learning
rates, :math:`c`) are the lanes of one compiled program per (batch size, tuner kind)
(:mod:`cdat_core.lab.minibatch_kernels`; constant and warm-up + cosine are one *schedule*
kind). Selection (per seed, per batch size) is by the *end loss*: the mean loss on the whole
training split at the end of the last ``end_epochs`` epochs; the paper's normalized
performance is the end loss over the initial loss. After the runs, a probe compares, at the
final iterate of each selected constant run, the linesearch's :math:`\eta` on mini-batches
of that batch size with its :math:`\eta` on the whole training split (Section 2.2, after
Mutschler & Zell, 2020).

:data:`STUDIES` holds the verify job's two budgets; :func:`run_study` returns one plain dict
per seed, in the layout the claims of :mod:`cdat_core.lab.claims.mini_batch` read.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cdat_core.lab import _train_kernels as _kernels
from cdat_core.lab import minibatch_kernels as kernels
from cdat_core.lab.problems import digits_mlp
from cdat_core.testing import MLP

__all__ = [
    "STUDIES",
    "Study",
    "data_order",
    "digits_split",
    "initial_params",
    "lane_steps",
    "run_study",
]

PyTree = Any


class Study(NamedTuple):
    r"""What the study runs.

    Attributes:
      batch_sizes: the batch sizes, increasing.
      sigmas: CDAT's :math:`\sigma` grid (must hold 1 and 2).
      ema_decays: CDAT's :math:`\beta_{cdat}` grid (must hold 0).
      num_epochs: epochs at every batch size.
      hidden: the MLP's hidden widths.
      num_train: examples of the training split (the rest of the 1797 are the test split).
      base_learning_rate: :math:`\eta_{ref}`, the grids' centre at ``reference_batch``.
      reference_batch: :math:`m_{ref}`.
      constant_exponents: the :math:`i` of the constant grid :math:`\eta_m 2^i`.
      schedule_exponents: the :math:`i` of the peak grid :math:`\eta_m 2^i`.
      warmup_fraction: the schedule's warm-up share of the run.
      linesearch_c: the linesearch's :math:`c` grid.
      end_epochs: epochs averaged in the end loss.
      probe_batches: mini-batches per iterate in the linesearch probe.
      probe_initial_learning_rate: the probe's first trial :math:`\eta_0`.
      probe_max_steps: the probe's trials at most (:math:`c_- = 0.8`, :math:`c = 10^{-4}`).
    """

    batch_sizes: tuple[int, ...]
    sigmas: tuple[float, ...]
    ema_decays: tuple[float, ...] = (0.0, 0.9, 0.99)
    num_epochs: int = 20
    hidden: tuple[int, ...] = (32,)
    num_train: int = 1024
    base_learning_rate: float = 0.1
    reference_batch: int = 128
    constant_exponents: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)
    schedule_exponents: tuple[int, ...] = (-2, -1, 0, 1, 2, 3, 4)
    warmup_fraction: float = 0.1
    linesearch_c: tuple[float, ...] = (1e-4, 0.5)
    end_epochs: int = 3
    probe_batches: int = 4
    probe_initial_learning_rate: float = 64.0
    probe_max_steps: int = 60

    def center(self, batch_size: int) -> float:
        r""":math:`\eta_m = \eta_{ref}\sqrt{m/m_{ref}}`."""
        return self.base_learning_rate * math.sqrt(batch_size / self.reference_batch)

    def describe(self) -> str:
        """The study in words, for the report."""
        sizes = "-".join(str(n) for n in (64, *self.hidden, 10))
        return (
            f"digits MLP {sizes}, {self.num_train} train / {1797 - self.num_train} test "
            f"examples, SGD momentum 0.9, {self.num_epochs} epochs per batch size"
        )


#: The verify job's studies: budget -> :class:`Study`.
STUDIES: dict[str, Study] = {
    "full": Study(
        batch_sizes=(16, 32, 64, 128, 256, 512),
        sigmas=(0.4, 0.7, 1.0, 1.3, 1.6, 2.0, 2.4, 2.8),
    ),
    "quick": Study(
        batch_sizes=(16, 64, 256),
        sigmas=(0.4, 1.0, 1.6, 2.0, 2.8),
        num_epochs=8,
        constant_exponents=(-2, -1, 0, 1, 2),
        schedule_exponents=(-1, 0, 1, 2, 3),
        linesearch_c=(1e-4,),
    ),
}


@functools.lru_cache(maxsize=4)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data, np.float32) / 16.0, np.eye(10, dtype=np.float32)[data.target]


def digits_split(num_train: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A fixed train/test split of digits: ``(train_x, train_y, test_x, test_y)``.

    The 1797 examples are shuffled once (NumPy seed 0, the same for every seed of the
    study); the first ``num_train`` are the training split, the rest the test split.

    Args:
      num_train: examples in the training split (1 to 1796).

    Returns:
      float32 pixels in [0, 1] ``(n, 64)`` and one-hot targets ``(n, 10)``.

    Example:
      >>> from cdat_core.lab import minibatch
      >>> [a.shape for a in minibatch.digits_split(1024)]
      [(1024, 64), (1024, 10), (773, 64), (773, 10)]
    """
    x, y = _digits()
    if not 1 <= num_train < len(x):
        raise ValueError(f"num_train must be in [1, {len(x) - 1}], got {num_train}")
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:num_train], order[num_train:]
    return tuple(jnp.asarray(a) for a in (x[train], y[train], x[test], y[test]))  # type: ignore[return-value]


def initial_params(hidden: Sequence[int], *, seed: int) -> PyTree:
    """The MLP's initial weights for ``seed`` (those of :func:`cdat_core.lab.problems.digits_mlp`).

    Example:
      >>> from cdat_core.lab import minibatch
      >>> [layer["w"].shape for layer in minibatch.initial_params((32,), seed=0)]
      [(64, 32), (32, 10)]
    """
    return digits_mlp(tuple(hidden), seed=seed).params


_STREAM = zlib.crc32(b"minibatch")


def data_order(seed: int, num_epochs: int, num_train: int, batch_size: int) -> np.ndarray:
    """The order of the examples for ``seed``: ``(num_epochs, steps, batch_size)`` indices.

    Epoch ``e`` is the ``e``-th permutation of ``range(num_train)`` drawn by NumPy's PCG64
    seeded with ``(seed, e)`` and a fixed stream number, the same on every machine and for
    every batch size (a batch size cuts it into ``num_train // batch_size`` mini-batches; a
    remainder is dropped); every tuner of a seed sees the same order.

    Example:
      >>> import numpy as np
      >>> from cdat_core.lab import minibatch
      >>> order = minibatch.data_order(0, 2, 10, 4)
      >>> order.shape, len(set(order[0].ravel().tolist()))
      ((2, 2, 4), 8)
      >>> bool((minibatch.data_order(0, 1, 10, 2).ravel() == np.concatenate([order[0].ravel(),
      ...      minibatch.data_order(0, 1, 10, 5).ravel()[8:]])).all())
      True
    """
    steps = num_train // batch_size
    if steps < 1:
        raise ValueError(f"batch_size {batch_size} exceeds num_train {num_train}")
    perms = [
        np.random.default_rng([_STREAM, seed, e]).permutation(num_train) for e in range(num_epochs)
    ]
    return np.stack(perms)[:, : steps * batch_size].reshape(num_epochs, steps, batch_size)


def _grids(study: Study, batch_size: int) -> dict[str, list[tuple[str, str, dict[str, float]]]]:
    """The grids at ``batch_size``: kind -> [(tuner, label, numbers)]."""
    center = study.center(batch_size)
    cdat = [
        ("cdat", f"cdat σ={s:g} β={b:g}", {"sigma": s, "ema_decay": b})
        for b in study.ema_decays
        for s in study.sigmas
    ]
    constant = [
        ("constant", f"constant η={eta:.3g}", {"peak_learning_rate": eta, "decay": 0.0})
        for eta in (center * 2.0**i for i in study.constant_exponents)
    ]
    schedule = [
        ("warmup_cosine", f"warmup_cosine peak={p:.3g}", {"peak_learning_rate": p, "decay": 1.0})
        for p in (center * 2.0**i for i in study.schedule_exponents)
    ]
    linesearch = [("linesearch", f"linesearch c={c:g}", {"c": c}) for c in study.linesearch_c]
    return {"cdat": cdat, "schedule": constant + schedule, "linesearch": linesearch}


def lane_steps(study: Study, num_seeds: int) -> int:
    """Lane-steps of the whole study (for progress): lanes x steps, over batch sizes."""
    total = 0
    for b in study.batch_sizes:
        lanes = sum(len(g) for g in _grids(study, b).values()) * num_seeds
        total += lanes * (study.num_train // b) * study.num_epochs
    return total


def _end_loss(train_loss: np.ndarray, last: int) -> float:
    value = float(np.mean(train_loss[-last:]))
    return value if math.isfinite(value) else math.inf


def _floats(x: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(x, np.float64)]


@functools.lru_cache(maxsize=4)
def _evaluate() -> Callable[..., Any]:
    return jax.jit(
        lambda w, x, y, tx, ty: (MLP.loss(w, x, y), kernels.classification_error(w, tx, ty))
    )


def _lanes(study: Study, batch_size: int, kind: str, num_seeds: int) -> list[tuple[int, Any]]:
    """The lanes of one program: (seed index, (tuner, label, numbers))."""
    return [(s, point) for s in range(num_seeds) for point in _grids(study, batch_size)[kind]]


def _compile_all(
    study: Study, seeds: Sequence[int], starts: list[PyTree], shared: Any
) -> dict[tuple[int, str], tuple[list[tuple[int, Any]], Future[Any], tuple[Any, ...]]]:
    """Every (batch size, kind) program's lanes, executable (a future) and arguments.

    The programs are traced here, in order, and compiled on two worker threads
    (:func:`cdat_core.lab.minibatch_kernels.compile_async`), so that later programs
    compile while earlier ones run.
    """
    calls = {}
    for b in study.batch_sizes:
        orders = np.stack([data_order(s, study.num_epochs, study.num_train, b) for s in seeds])
        orders_on_devices = _kernels.put_replicated(orders.astype(np.int32))
        for kind, names in kernels.KINDS.items():
            lanes = _lanes(study, b, kind, len(seeds))
            size = kernels.pad_lanes(len(lanes))
            numbers = [p[2] for _, p in lanes] + [lanes[-1][1][2]] * (size - len(lanes))
            seed_index = [s for s, _ in lanes] + [lanes[-1][0]] * (size - len(lanes))
            args = (
                kernels.stack_padded([starts[s] for s, _ in lanes], size),
                _kernels.put_lanes(
                    {n: np.asarray([x[n] for x in numbers], np.float32) for n in names}
                ),
                _kernels.put_lanes(np.asarray(seed_index, np.int32)),
                orders_on_devices,
                shared,
            )
            program = kernels.train_program(
                kind, b, study.num_epochs, study.num_train, study.warmup_fraction
            )
            key = (
                kind,
                b,
                study.num_epochs,
                study.num_train,
                study.warmup_fraction,
                size,
                len(seeds),
                tuple(study.hidden),
                tuple(jax.local_devices()),
            )
            calls[b, kind] = (lanes, kernels.compile_async(key, program, *args), args)
    return calls


def run_study(
    study: Study, seeds: Sequence[int], *, progress: Callable[[int], None] | None = None
) -> list[dict[str, Any]]:
    """Run the study from every seed at once; one result dict per seed.

    Args:
      study: what to run.
      seeds: the seeds (initial weights and data order).
      progress: called with the lane-steps done after each compiled call.

    Returns:
      Per seed: ``description``, ``batch_sizes``, ``sigmas``, ``ema_decays``,
      ``num_epochs``, ``end_epochs``, ``steps_per_epoch``, ``initial_loss``,
      ``initial_test_error``, ``runs`` (batch size as a string -> label -> run: ``tuner``,
      ``hyperparams``, per-epoch ``train_loss``, ``test_error``, ``batch_loss``,
      ``learning_rate``, ``first_learning_rate``, and ``end_loss``, ``normalized``,
      ``final_test_error``), ``selected`` (batch size -> ``constant``,
      ``warmup_cosine``, ``linesearch``, ``cdat`` -> the label of the best run by end
      loss), ``best_inside_grid`` (batch size -> ``constant``, ``warmup_cosine`` -> whether
      the best is inside its power-of-2 grid, appendix C.3), ``probe`` (batch size ->
      ``minibatch``: the linesearch's η on ``probe_batches`` mini-batches, ``full``: its
      η on the training split, both at the final iterate of the selected constant run;
      ``capped``: how many searches accepted the first trial).
    """
    if 1.0 not in study.sigmas or 2.0 not in study.sigmas or 0.0 not in study.ema_decays:
        raise ValueError("a study's sigmas must hold 1 and 2, and its ema_decays 0")
    if list(study.batch_sizes) != sorted(set(study.batch_sizes)):
        raise ValueError(f"batch_sizes must increase, got {study.batch_sizes}")
    if max(study.batch_sizes) > study.num_train:
        raise ValueError(f"batch_sizes {study.batch_sizes} exceed num_train {study.num_train}")
    if not 1 <= study.end_epochs <= study.num_epochs:
        raise ValueError(f"end_epochs must be in [1, num_epochs], got {study.end_epochs}")
    data = digits_split(study.num_train)
    shared = _kernels.put_replicated(data)
    starts = [initial_params(study.hidden, seed=s) for s in seeds]
    first = [jax.device_get(_evaluate()(w, *data)) for w in starts]
    out: list[dict[str, Any]] = [
        {
            "description": study.describe(),
            "batch_sizes": list(study.batch_sizes),
            "sigmas": list(study.sigmas),
            "ema_decays": list(study.ema_decays),
            "num_epochs": study.num_epochs,
            "end_epochs": study.end_epochs,
            "steps_per_epoch": {str(b): study.num_train // b for b in study.batch_sizes},
            "initial_loss": float(loss),
            "initial_test_error": float(err),
            "runs": {},
            "selected": {},
            "best_inside_grid": {},
            "probe": {},
        }
        for loss, err in first
    ]
    iterates: dict[int, list[PyTree]] = {}
    calls = _compile_all(study, seeds, starts, shared)
    for b in study.batch_sizes:
        key_b = str(b)
        finals: dict[str, list[PyTree]] = {}
        for seed_out in out:
            seed_out["runs"][key_b] = {}
        for kind in kernels.KINDS:
            lanes, executable, args = calls[b, kind]
            final, records = executable.result()(*args)
            final, records = jax.device_get((final, records))
            for i, (s, (tuner, label, point)) in enumerate(lanes):
                run = {k: np.asarray(v[i], np.float64) for k, v in records.items()}
                end = _end_loss(run["train_loss"], study.end_epochs)
                out[s]["runs"][key_b][label] = {
                    "tuner": tuner,
                    "hyperparams": dict(point),
                    **{k: _floats(v) for k, v in run.items()},
                    "end_loss": end,
                    "normalized": end / out[s]["initial_loss"],
                    "final_test_error": float(run["test_error"][-1]),
                }
                finals.setdefault(label, [None] * len(seeds))[s] = jax.tree.map(
                    lambda x, i=i: x[i], final
                )
            if progress is not None:
                progress(len(lanes) * (study.num_train // b) * study.num_epochs)
        iterates[b] = []
        for s, seed_out in enumerate(out):
            runs = seed_out["runs"][key_b]
            chosen, inside = {}, {}
            for tuner in ("constant", "warmup_cosine", "linesearch", "cdat"):
                labels = [k for k, r in runs.items() if r["tuner"] == tuner]
                best = min(range(len(labels)), key=lambda i: runs[labels[i]]["end_loss"])
                chosen[tuner], inside[tuner] = labels[best], 0 < best < len(labels) - 1
            seed_out["selected"][key_b] = chosen
            seed_out["best_inside_grid"][key_b] = {
                t: inside[t] for t in ("constant", "warmup_cosine")
            }
            iterates[b].append(finals[chosen["constant"]][s])
    _probe(study, out, list(seeds), iterates, data)
    return out


def _probe(
    study: Study,
    out: list[dict[str, Any]],
    seeds: list[int],
    iterates: dict[int, list[PyTree]],
    data: tuple[jax.Array, ...],
) -> None:
    """The linesearch on mini-batches vs on the training split, at the same iterates."""
    x, y = np.asarray(data[0]), np.asarray(data[1])
    n, largest = study.num_train, max(study.batch_sizes)
    mini: list[tuple[int, int, np.ndarray]] = []  # (seed index, batch size, example indices)
    for s, seed in enumerate(seeds):
        for b in study.batch_sizes:
            rng = np.random.default_rng([_STREAM, seed, study.num_epochs, b])
            mini.extend((s, b, rng.permutation(n)[:b]) for _ in range(study.probe_batches))
    full = [(s, b) for s in range(len(seeds)) for b in study.batch_sizes]
    eta0, steps = study.probe_initial_learning_rate, study.probe_max_steps
    eta_mini = kernels.run_probe(
        [iterates[b][s] for s, b, _ in mini],
        [i for _, _, i in mini],
        largest,
        x,
        y,
        initial_learning_rate=eta0,
        max_steps=steps,
    )
    eta_full = kernels.run_probe(
        [iterates[b][s] for s, b in full],
        [np.arange(n)] * len(full),
        n,
        x,
        y,
        initial_learning_rate=eta0,
        max_steps=steps,
    )
    first = study.probe_initial_learning_rate
    for (s, b), eta in zip(full, eta_full, strict=True):
        batch = [
            float(e) for (s2, b2, _), e in zip(mini, eta_mini, strict=True) if (s2, b2) == (s, b)
        ]
        out[s]["probe"][str(b)] = {
            "minibatch": batch,
            "full": float(eta),
            "capped": sum(e >= first for e in batch) + int(eta >= first),
        }
