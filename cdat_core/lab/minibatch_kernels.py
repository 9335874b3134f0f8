r"""Compiled programs of the mini-batch study (:mod:`cdat_core.lab.minibatch`): epochs, probes.

:func:`train_program` is one compiled program per *(tuner kind, batch size)*: every lane (one
run: its initial weights, its traced numbers such as :math:`\sigma`, :math:`\beta` or a peak
learning rate, and its data-order key) trains for a fixed number of epochs of SGD with
momentum 0.9 and the kind's tuner, and records, at the end of every epoch, the loss on the
whole training split, the error on the test split, the mean mini-batch loss and the median
learning rate of the epoch. An epoch is one pass over the training split in the order given
for the lane's seed (:func:`cdat_core.lab.minibatch.data_order`: drawn on the host, so that
the program holds no sort), cut into ``num_train // batch_size`` mini-batches. Each step calls
``optimizer.update(grad, state, params, value_fn=f_m, value=f_m(w), grad=∇f_m(w))`` with
:math:`f_m` the loss on the current mini-batch :math:`m_t`: mini-batch CDAT evaluates
:math:`n_t` and :math:`d_t` on :math:`m_t`, as in Section 3.1 of the paper.

:func:`probe_program` is the backtracking linesearch (:func:`cdat_core.backtracking_linesearch`)
along the negative gradient of a weighted loss, one lane per (iterate, weights): weights
:math:`1/B` on a mini-batch of size :math:`B` give the mini-batch search, weights
:math:`1/N` on every example the full-batch one; mini-batches are padded with zero weights
to the largest batch size, so every batch size's search is one program (and the full-batch
search another: one compilation per padded width).

The lanes are mapped with ``vmap`` and their axis is sharded over every local device
(the mesh of :func:`cdat_core.lab.train.run_lanes`), as in the rest of the lab.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core.lab import _train_kernels as _kernels
from cdat_core.lab.bases import BASES
from cdat_core.lab.schedules import scale_by_scheduled_learning_rate
from cdat_core.lab.tuners import factory
from cdat_core.linesearch import backtracking_linesearch
from cdat_core.testing import MLP

__all__ = [
    "COMPILER_OPTIONS",
    "KINDS",
    "classification_error",
    "compile_async",
    "learning_rate_of",
    "make_optimizer",
    "pad_lanes",
    "probe_program",
    "run_probe",
    "stack_padded",
    "train_program",
]

PyTree = Any
Numbers = Mapping[str, jax.Array]

#: The tuner kinds (one compiled program each per batch size) and their traced numbers.
KINDS: dict[str, tuple[str, ...]] = {
    "cdat": ("sigma", "ema_decay"),
    "schedule": ("peak_learning_rate", "decay"),
    "linesearch": ("c",),
}


def _schedule(numbers: Numbers, num_steps: int, warmup_fraction: float) -> Callable[..., Any]:
    warmup = max(1, round(warmup_fraction * num_steps))
    shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, num_steps)
    peak, decay = numbers["peak_learning_rate"], numbers["decay"]

    def schedule(count: jax.Array) -> jax.Array:
        dtype = jnp.result_type(peak)
        curve = jnp.asarray(shape(jnp.asarray(count).astype(dtype))).astype(dtype)
        return peak * jnp.where(decay > 0.5, curve, jnp.ones((), dtype))

    return schedule


def make_optimizer(
    kind: str, numbers: Numbers, *, num_steps: int, warmup_fraction: float = 0.1
) -> optax.GradientTransformation:
    r"""SGD with momentum 0.9 (the ``momentum`` base) and the tuner of ``kind``.

    - ``cdat``: :func:`cdat_core.scale_by_cdat` with ``sigma`` and ``ema_decay``
      (:math:`\beta`); :math:`\sigma = 1`, :math:`\beta = 0` is the greedy rule (3);
    - ``schedule``: ``peak_learning_rate`` times 1 (``decay`` 0: a constant) or times a
      linear warm-up over ``warmup_fraction`` of ``num_steps`` from 0 then a cosine decay to
      0 (``decay`` 1), :func:`cdat_core.lab.schedules.scale_by_scheduled_learning_rate`;
    - ``linesearch``: the lab's linesearch tuner (:data:`cdat_core.lab.tuners.TUNERS`) with
      sufficient-decrease constant ``c`` and its defaults (:math:`c_- = 0.8`,
      :math:`c_+ = 4`, :math:`\eta_{\max} = 1`, at most 30 trials per step).

    Args:
      kind: a key of :data:`KINDS`.
      numbers: its traced numbers (the names of ``KINDS[kind]``).
      num_steps: the horizon of the schedule (steps of the whole run).
      warmup_fraction: the warm-up's share of the horizon.

    Returns:
      The optax transformation; its ``update`` takes ``value_fn``, ``value`` and ``grad``.

    Raises:
      ValueError: an unknown kind.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from cdat_core.lab import minibatch_kernels as mk
      >>> opt = mk.make_optimizer("schedule", {"peak_learning_rate": jnp.asarray(0.5),
      ...                                      "decay": jnp.asarray(0.0)}, num_steps=10)
      >>> updates, state = opt.update(jnp.ones(1), opt.init(jnp.zeros(1)))
      >>> updates.tolist(), float(mk.learning_rate_of(state))
      ([-0.5], 0.5)
    """
    if kind == "schedule":
        tuner = scale_by_scheduled_learning_rate(_schedule(numbers, num_steps, warmup_fraction))
        return optax.chain(BASES.lookup("momentum").build(), tuner)
    if kind == "cdat":
        return factory("cdat", "momentum")(
            {"sigma": numbers["sigma"], "ema_decay": numbers["ema_decay"]}
        )
    if kind == "linesearch":
        search: dict[str, Any] = {"c": numbers["c"], "delta": 0.0, "decrease_factor": 0.8}
        return factory("linesearch", "momentum")({**search, "increase_factor": 4.0})
    raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")


def learning_rate_of(state: Any) -> jax.Array:
    """The ``learning_rate`` field of an optimizer state (the step just taken)."""
    (found,) = optax.tree.get_all_with_path(state, "learning_rate")
    return jnp.asarray(found[1])


def classification_error(params: PyTree, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Fraction of examples whose largest output is not the target class.

    Example:
      >>> import jax.numpy as jnp
      >>> from cdat_core.lab import minibatch_kernels as mk
      >>> w = [{"w": jnp.eye(2), "b": jnp.zeros(2)}]  # outputs = inputs
      >>> float(mk.classification_error(w, jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.eye(2)))
      0.5
    """
    wrong = jnp.argmax(MLP.predict(params, inputs), -1) != jnp.argmax(targets, -1)
    return jnp.mean(wrong.astype(inputs.dtype))


@functools.lru_cache(maxsize=64)
def train_program(
    kind: str,
    batch_size: int,
    num_epochs: int,
    num_train: int,
    warmup_fraction: float = 0.1,
) -> Callable[..., Any]:
    """The compiled training program of ``kind`` at ``batch_size``, mapped over lanes.

    Args:
      kind: a key of :data:`KINDS`.
      batch_size: examples per mini-batch (structural).
      num_epochs: epochs per run.
      num_train: examples of the training split.
      warmup_fraction: see :func:`make_optimizer`.

    Returns:
      ``(params, numbers, seed_index, orders, data) -> (final params, records)``: ``params``,
      ``numbers`` (a dict of the names of ``KINDS[kind]``) and ``seed_index`` (an int32 per
      lane) have a leading lane axis; ``orders`` (shared) is ``(seeds, num_epochs, steps,
      batch_size)`` example indices, of which a lane reads ``orders[seed_index]``; ``data``
      is ``(train_x, train_y, test_x, test_y)``, shared. ``records`` is a
      dict of ``(lanes, num_epochs)`` arrays: ``train_loss``, ``test_error``,
      ``batch_loss`` (mean over the epoch), ``learning_rate`` (median over the epoch), and
      ``first_learning_rate`` (the learning rate of each epoch's first step).
    """
    steps = num_train // batch_size
    if steps < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_train} training examples")
    loss = MLP.loss

    def lane(params: PyTree, numbers: Numbers, seed: jax.Array, orders: jax.Array, data: Any):
        train_x, train_y, test_x, test_y = data
        optimizer = make_optimizer(
            kind, numbers, num_steps=steps * num_epochs, warmup_fraction=warmup_fraction
        )

        def step(carry: Any, idx: jax.Array) -> Any:
            w, state = carry
            xb, yb = train_x[idx], train_y[idx]

            def fun(p: PyTree) -> jax.Array:
                return loss(p, xb, yb)

            value, grad = jax.value_and_grad(fun)(w)
            updates, state = optimizer.update(grad, state, w, value_fn=fun, value=value, grad=grad)
            return (optax.apply_updates(w, updates), state), (value, learning_rate_of(state))

        def epoch(carry: Any, order: jax.Array) -> Any:
            carry, (values, rates) = jax.lax.scan(step, carry, order)
            w = carry[0]
            record = {
                "train_loss": loss(w, train_x, train_y),
                "test_error": classification_error(w, test_x, test_y),
                "batch_loss": jnp.mean(values),
                "learning_rate": jnp.median(rates),
                "first_learning_rate": rates[0],
            }
            return carry, record

        carry = (params, optimizer.init(params))
        (w, _), records = jax.lax.scan(epoch, carry, orders[seed])
        return w, records

    return _kernels.over_lanes(lane, (0, 0, 0, None, None), sequential=False)


def _weighted_loss(params: PyTree, inputs: jax.Array, targets: jax.Array, weights: jax.Array):
    err = MLP.predict(params, inputs) - targets
    return 0.5 * jnp.sum(weights * jnp.sum(err**2, axis=-1))


@functools.lru_cache(maxsize=8)
def probe_program(max_steps: int) -> Callable[..., Any]:
    r"""The linesearch probe, mapped over lanes (compiled once per example count).

    Each lane searches along :math:`u = -\nabla f_\omega(w)` with :math:`f_\omega(w) =
    \sum_i \omega_i \ell_i(w)` over its own examples (``weights`` :math:`\omega` summing
    to 1, zero on padding): the largest :math:`\eta = c_-^k \eta_0`, :math:`k < K`, with
    :math:`f_\omega(w + \eta u) \le f_\omega(w) + c\,\eta\,\nabla f_\omega(w)^\top u`
    (:func:`cdat_core.backtracking_linesearch`).

    Args:
      max_steps: :math:`K` (structural).

    Returns:
      ``(params, inputs, targets, weights, numbers) -> (learning_rate, accepted)``; all
      but ``numbers`` (the scalars ``initial_learning_rate``, ``c``, ``decrease_factor``)
      have a leading lane axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from cdat_core.lab import minibatch, minibatch_kernels as mk
      >>> x, y, _, _ = minibatch.digits_split(64)
      >>> w = minibatch.initial_params((8,), seed=0)
      >>> two = lambda a: jnp.stack([a, a])
      >>> weights = jnp.stack([jnp.full(64, 1 / 64), jnp.zeros(64).at[:8].set(1 / 8)])
      >>> numbers = {"initial_learning_rate": 64.0, "c": 1e-4, "decrease_factor": 0.8}
      >>> eta, ok = mk.probe_program(60)(jax.tree.map(two, w), two(x), two(y), weights, numbers)
      >>> bool(ok.all()), bool((eta > 0).all())
      (True, True)
    """

    def lane(params: PyTree, x: jax.Array, y: jax.Array, weights: jax.Array, numbers: Numbers):
        def fun(p: PyTree) -> jax.Array:
            return _weighted_loss(p, x, y, weights)

        value, grad = jax.value_and_grad(fun)(params)
        direction = jax.tree.map(jnp.negative, grad)
        slope = -sum(jnp.sum(g * g) for g in jax.tree.leaves(grad))
        result = backtracking_linesearch(
            fun,
            params,
            direction,
            value=value,
            slope=slope,
            initial_learning_rate=numbers["initial_learning_rate"],
            c=numbers["c"],
            decrease_factor=numbers["decrease_factor"],
            max_steps=max_steps,
        )
        return result.learning_rate, result.accepted

    return _kernels.over_lanes(lane, (0, 0, 0, 0, None), sequential=False)


#: XLA options of the study's programs: LLVM at -O1 instead of -O2 cut the quick study's
#: compile time from 21.7 s to 12.7 s of CPU (9 programs) and left the run time unchanged
#: (1.6 s vs 1.3 s): these programs are small loops whose time goes to compiling them.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}

_POOL: list[ThreadPoolExecutor] = []
_EXECUTABLES: dict[tuple[Any, ...], Future[Any]] = {}


def compile_async(key: tuple[Any, ...], program: Callable[..., Any], *args: Any) -> Future[Any]:
    """``program`` traced for ``args`` now and compiled on a worker thread (kept by ``key``).

    Two worker threads: XLA's compiler releases the GIL and uses one core, so a program
    compiles while an earlier one runs. ``key`` names the program and its argument shapes;
    a second call with it returns the same executable (a process compiles each once).
    """
    if key not in _EXECUTABLES:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="study-compile"))
        lowered = cast(Any, program).lower(*args)
        _EXECUTABLES[key] = _POOL[0].submit(lowered.compile, COMPILER_OPTIONS)
    return _EXECUTABLES[key]


def pad_lanes(n: int) -> int:
    """``n`` lanes rounded up to a multiple of the local device count."""
    devices = len(jax.local_devices())
    return -(-n // devices) * devices


def stack_padded(trees: list[PyTree], size: int) -> PyTree:
    """``trees`` (padded to ``size`` with the last) stacked on a lane axis, sharded."""
    trees = trees + [trees[-1]] * (size - len(trees))
    return _kernels.put_lanes(_kernels.stack_lanes(trees))


def run_probe(
    params: list[PyTree],
    indices: Sequence[np.ndarray],
    width: int,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    initial_learning_rate: float,
    max_steps: int,
) -> np.ndarray:
    """:func:`probe_program` (c = 1e-4, c₋ = 0.8) at ``params[i]`` on examples ``indices[i]``.

    Each lane's examples are padded with zero weights to ``width``; returns the η per lane.
    """
    size = pad_lanes(len(params))
    weights = np.zeros((size, width), np.float32)
    gather = np.zeros((size, width), np.int64)
    for i in range(size):
        j = indices[min(i, len(indices) - 1)]
        gather[i, : len(j)] = j
        weights[i, : len(j)] = 1.0 / len(j)
    numbers = {"initial_learning_rate": initial_learning_rate, "c": 1e-4, "decrease_factor": 0.8}
    args = (
        stack_padded(params, size),
        _kernels.put_lanes(inputs[gather]),
        _kernels.put_lanes(targets[gather]),
        _kernels.put_lanes(weights),
        numbers,
    )
    key = ("probe", max_steps, size, width, jax.tree.structure(params[0]), inputs.shape[1:])
    eta, _ = compile_async(key, probe_program(max_steps), *args).result()(*args)
    return np.asarray(eta)[: len(params)]
