r"""The lab's training loop: one compiled ``lax.scan`` per chunk, sharpness between chunks.

:func:`train` runs any optax transformation on an objective ``loss(params, *data)`` and
records, at every step :math:`t`, the loss :math:`f(w_t)`, the learning rate :math:`\eta_t`
(the ``learning_rate`` field of the optimizer state, as every cdat_core tuner and
:func:`cdat_core.lab.tuners.scale_by_scheduled_learning_rate` keep it), the gradient norm
:math:`\|\nabla f(w_t)\|` and the tuner's internals (every named scalar field of the optimizer
state: CDAT's numerator and denominator, the linesearch's number of trials, ...). Every
``record_every`` steps it measures the sharpness :math:`\lambda_{\max}(\nabla^2 f(w_t))` on
the full data with :func:`cdat_core.hessian_sharpness` (Lanczos), warm-started from the previous
eigenvector so that tracking it costs a few Hessian-vector products per record; when the
optimizer state holds a second moment ``nu`` (Adam, RMSProp) the Hessian is preconditioned
(:func:`cdat_core.preconditioner_from_optax_state`, appendix B.1 of Roulet et al., 2024).

:func:`run_lanes` runs several copies of one optimizer that differ only in numbers (learning
rates, :math:`\sigma`, ...), initial weights (seeds) or PRNG keys side by side with ``vmap``,
the lane axis sharded over every local device: one compilation serves seeds x grid, which is
what makes the appendix C.3 grid searches over several seeds affordable on a CPU;
:func:`sweep` is its one-start case. Compiled chunks are cached on (objective, optimizer
factory, structure), so a second run with new numbers never recompiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core import _tree
from cdat_core.lab import _train_kernels as _kernels
from cdat_core.lab.history import History, TrainResult, last_iterates_loss

__all__ = [
    "History",
    "TrainResult",
    "adam_preconditioner",
    "last_iterates_loss",
    "run_lanes",
    "sweep",
    "train",
]

PyTree = Any
OptimizerFactory = _kernels.OptimizerFactory
adam_preconditioner = _kernels.adam_preconditioner


def initial_sharpness(
    loss: Callable[..., Any],
    params: PyTree,
    data: Sequence[Any] = (),
    *,
    key: jax.Array,
    num_iters: int = 30,
) -> float:
    r""":math:`\lambda_{\max}(\nabla^2 f(w_0))` by Lanczos, compiled once per objective.

    Args:
      loss: ``loss(params, *data)``.
      params: :math:`w_0`.
      data: the arrays passed to ``loss``.
      key: PRNG key of the start vector.
      num_iters: Hessian-vector products at most.

    Returns:
      The sharpness as a Python float.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from cdat_core.lab import train
      >>> loss = lambda w, a: 0.5 * jnp.sum(a * w**2)
      >>> round(train.initial_sharpness(loss, jnp.ones(3), (jnp.array([1.0, 5.0, 2.0]),),
      ...                               key=jax.random.key(0)), 4)
      5.0
    """
    value, _ = _kernels.initial_sharpness_fn(loss, num_iters)(params, tuple(data), key)
    return float(value)


def sweep(
    loss: Callable[..., Any],
    params: PyTree,
    make_optimizer: OptimizerFactory,
    hyperparams: Sequence[Mapping[str, float]],
    *,
    num_steps: int,
    data: Sequence[Any] = (),
    record_every: int = 100,
    sharpness_iters: int = 20,
    key: jax.Array,
    batch_size: int | None = None,
    preconditioner: Callable[[Any], PyTree] | None = None,
    progress: Callable[[int], None] | None = None,
    vectorize: bool = True,
) -> list[TrainResult]:
    r"""Train one copy of ``make_optimizer(h)`` per ``h`` in ``hyperparams``, side by side.

    All copies start from ``params`` with the same ``key`` (so, when batching, they see the
    same mini-batches): :func:`run_lanes` with one lane per entry of ``hyperparams``. Each
    step calls ``optimizer.update(grad, state, params, value_fn=f, value=f(w), grad=∇f(w))``,
    so tuners reuse the value and gradient the loop already has.

    Args:
      loss: the objective ``loss(params, *data) -> scalar``.
      params: :math:`w_0`, shared by every copy.
      make_optimizer: ``hyperparams -> optax transformation``.
      hyperparams: one dict of numbers per copy, all with the same keys.
      num_steps: number of steps :math:`T` (rounded up to a multiple of ``record_every``).
      data: arrays passed to ``loss`` after ``params``.
      record_every: chunk length, and the sharpness period.
      sharpness_iters: Lanczos iterations per record at most.
      key: the PRNG key of every copy.
      batch_size: mini-batch size, or ``None`` for full batch.
      preconditioner: ``opt_state -> P`` for the preconditioned sharpness, or ``None``.
      progress: called with the number of steps done (all copies) after each chunk.
      vectorize: see :func:`run_lanes`.

    Returns:
      One :class:`TrainResult` per entry of ``hyperparams``, in order.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from cdat_core.lab import train
      >>> loss = lambda w, a: 0.5 * jnp.sum(a * w**2)
      >>> make = lambda h: optax.chain(optax.sgd(1.0), optax.scale(h["lr"]))
      >>> runs = train.sweep(loss, jnp.ones(2), make, [{"lr": 0.1}, {"lr": 0.3}],
      ...                    data=(jnp.array([1.0, 2.0]),), num_steps=20, record_every=10,
      ...                    key=jax.random.key(0))
      >>> [bool(r.history.loss[-1] < r.history.loss[0]) for r in runs]
      [True, True]
      >>> runs[0].history.sharpness.round(3).tolist()
      [2.0, 2.0]
    """
    lanes = len(hyperparams)
    return run_lanes(
        loss,
        [params] * lanes,
        make_optimizer,
        hyperparams,
        [key] * lanes,
        num_steps=num_steps,
        data=data,
        record_every=record_every,
        sharpness_iters=sharpness_iters,
        batch_size=batch_size,
        preconditioner=preconditioner,
        progress=progress,
        vectorize=vectorize,
    )


def run_lanes(
    loss: Callable[..., Any],
    params: Sequence[PyTree],
    make_optimizer: OptimizerFactory,
    hyperparams: Sequence[Mapping[str, float]],
    keys: Sequence[jax.Array],
    *,
    num_steps: int,
    data: Sequence[Any] = (),
    record_every: int = 100,
    sharpness_iters: int = 20,
    batch_size: int | None = None,
    preconditioner: Callable[[Any], PyTree] | None = None,
    progress: Callable[[int], None] | None = None,
    vectorize: bool = True,
    lanes_per_call: int | None = None,
    instant: bool = False,
) -> list[TrainResult]:
    r"""Train one run per *lane* (its own :math:`w_0`, numbers and key) in one compiled program.

    The lanes (e.g. seeds x a grid of learning rates) are stacked on a leading axis that
    every compiled function is vmapped over, and that axis is sharded over every local device
    (a 1-D ``jax.sharding`` mesh). The lanes go ``lanes_per_call`` at a time (all at once by
    default), each call padded to that count rounded up to a multiple of the device count
    by repeating its last lane: runs that differ only in numbers, initial weights or keys
    share one compilation per lane count, so a fixed ``lanes_per_call`` makes every sweep of
    one optimizer structure one compiled program, however long its grid. Each chunk of
    ``record_every`` steps is one ``lax.scan``; between chunks every lane's sharpness is
    measured (see the module notes), warm-started from the Lanczos vector of its initial
    sharpness (computed once per distinct ``(params, key)`` object pair).

    Args:
      loss: the objective ``loss(params, *data) -> scalar``. Keep the same function object
        across calls to reuse compilations.
      params: :math:`w_0` of each lane (pytrees of one structure and shape).
      make_optimizer: ``hyperparams -> optax transformation``, called inside ``jit`` with a
        dict of traced scalars (the params' dtype); keep the same object across calls.
      hyperparams: the numbers of each lane, all with the same keys.
      keys: the PRNG key of each lane (first sharpness start vector, mini-batches).
      num_steps: number of steps (rounded up to a multiple of ``record_every``).
      data: arrays passed to ``loss`` after ``params`` (the same for every lane);
        mini-batches index their leading axis.
      record_every: chunk length, and the sharpness period.
      sharpness_iters: Lanczos iterations (Hessian-vector products) per record at most.
      batch_size: ``None`` for full batch, else the size of the mini-batch drawn (without
        replacement) at every step.
      preconditioner: ``opt_state -> P`` (a pytree like params) or ``None``; e.g.
        :func:`adam_preconditioner`. The sharpness is then that of :math:`P^{-1/2}HP^{-1/2}`.
      progress: called with the number of steps done (all lanes) after each chunk.
      vectorize: batch the lanes of a call with ``vmap`` (default), else run each
        device's lanes one after the other (``lax.map``; faster for code that batches
        poorly: convolutions on CPU, a Lanczos solve inside the step).
      lanes_per_call: lanes per compiled call (rounded up to a multiple of the device
        count); ``None``: every lane in one call.
      instant: also measure, at every record, the gap between an on-edge and a greedy
        gradient-descent step from the same iterate (``History.instant_gap``, Fig. 16; a
        gradient, a curvature and two losses per record).

    Returns:
      One :class:`TrainResult` per lane, in order.

    Example:
      Two seeds' initial weights, each with two learning rates:

      >>> import jax, jax.numpy as jnp, optax
      >>> from cdat_core.lab import train
      >>> loss = lambda w: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * w**2)
      >>> make = lambda h: optax.chain(optax.sgd(1.0), optax.scale(h["lr"]))
      >>> w0 = [jnp.ones(2), -jnp.ones(2)]
      >>> runs = train.run_lanes(loss, [w0[0], w0[0], w0[1], w0[1]], make,
      ...                        [{"lr": 0.1}, {"lr": 0.2}] * 2, [jax.random.key(0)] * 4,
      ...                        num_steps=4, record_every=2)
      >>> [round(float(r.history.loss[0]), 3) for r in runs]
      [2.5, 2.5, 2.5, 2.5]
      >>> [round(float(r.params[0]), 4) for r in runs]
      [0.6561, 0.4096, -0.6561, -0.4096]
    """
    lanes = len(hyperparams)
    if not lanes:
        raise ValueError("run_lanes needs at least one lane (hyperparams is empty).")
    if len(params) != lanes or len(keys) != lanes:
        raise ValueError(
            f"params ({len(params)}), hyperparams ({lanes}) and keys ({len(keys)}) must have "
            "one entry per lane."
        )
    if num_steps < 1 or record_every < 1:
        raise ValueError(
            f"num_steps and record_every must be >= 1, got {num_steps}, {record_every}"
        )
    names = sorted(hyperparams[0])
    if any(sorted(h) != names for h in hyperparams):
        raise ValueError("every entry of hyperparams must have the same keys.")
    data = tuple(data)
    dtype = _tree.accumulation_dtype(*(jnp.result_type(x) for x in jax.tree.leaves(params[0])))
    init, chunk = _kernels.compiled(loss, make_optimizer, record_every, batch_size, not vectorize)
    start = time.perf_counter()
    first_sharpness = _kernels.initial_sharpness_fn(loss, max(sharpness_iters, 30))
    starts: dict[tuple[int, int], tuple[float, PyTree, jax.Array]] = {}
    for p, k in zip(params, keys, strict=True):
        if (id(p), id(k)) not in starts:
            sharpness_key, batch_key = jax.random.split(k)
            lam0, v0 = first_sharpness(p, data, sharpness_key)
            starts[id(p), id(k)] = (float(lam0), v0, batch_key)
    lane_start = [starts[id(p), id(k)] for p, k in zip(params, keys, strict=True)]
    data = _kernels.put_replicated(data)
    num_chunks = -(-num_steps // record_every)
    record_step = record_every * np.arange(1, num_chunks + 1)
    devices = len(jax.local_devices())

    def run_group(idx: list[int]) -> list[TrainResult]:
        size = -(-group // devices) * devices
        padded = idx + [idx[-1]] * (size - len(idx))
        stacked = _kernels.put_lanes(_kernels.stack_lanes([params[i] for i in padded]))
        hp_group = _kernels.put_lanes(
            {n: jnp.asarray([float(hyperparams[i][n]) for i in padded], dtype) for n in names}
        )
        batch_keys = _kernels.put_lanes(_kernels.stack_keys([lane_start[i][2] for i in padded]))
        eigvec = _kernels.put_lanes(_kernels.stack_lanes([lane_start[i][1] for i in padded]))
        zeros = _kernels.put_lanes(np.zeros((size,), np.int32))
        carry = (stacked, init(stacked, hp_group), zeros, _tree.zeros_like(stacked))
        preconditioned = preconditioner is not None and bool(
            optax.tree.get_all_with_path(carry[1], "nu")
        )
        measure = _kernels.measure_fn(loss, preconditioned, sharpness_iters, instant)
        per_step: list[Any] = []
        per_record: list[Any] = []
        for _ in range(num_chunks):
            carry, records = chunk(carry, hp_group, data, batch_keys)
            scaling = None
            if preconditioned and preconditioner is not None:
                scaling = _kernels.precondition_fn(preconditioner)(carry[1])
            value, sharp, converged, eigvec, alignment, gap = measure(
                carry[0], scaling, eigvec, data, carry[3]
            )
            per_step.append(jax.device_get(records))
            per_record.append(jax.device_get((value, sharp, converged, alignment, gap)))
            if progress is not None:
                progress(record_every * len(idx))
        seconds = time.perf_counter() - start
        steps = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *per_step)
        loss_t, lr_t, gnorm_t, internals, cosine_t = steps
        rec_loss, rec_sharp, rec_conv, rec_align, rec_gap = (
            np.stack(x, axis=1) for x in zip(*per_record, strict=True)
        )
        chunk_lr = lr_t.reshape(size, num_chunks, record_every)
        final = jax.device_get((carry[0], carry[1]))
        out = []
        for i, lane in enumerate(idx):
            with np.errstate(all="ignore"):
                record_lr = np.median(chunk_lr[i], axis=-1)
            history = History(
                loss=loss_t[i],
                learning_rate=lr_t[i],
                grad_norm=gnorm_t[i],
                internals={k: np.asarray(v[i]) for k, v in internals.items()},
                record_step=record_step,
                record_loss=rec_loss[i],
                sharpness=rec_sharp[i],
                sharpness_converged=rec_conv[i],
                record_learning_rate=record_lr,
                preconditioned=preconditioned,
                initial_sharpness=lane_start[lane][0],
                seconds=seconds,
                update_cosine=cosine_t[i],
                alignment=rec_align[i],
                instant_gap=rec_gap[i],
            )
            params_i, state_i = jax.tree.map(lambda x, i=i: x[i], final)
            out.append(TrainResult(history, params_i, state_i))
        return out

    order = list(range(lanes))
    group = lanes_per_call or lanes
    if group < 1:
        raise ValueError(f"lanes_per_call must be >= 1, got {lanes_per_call}")
    groups = [order[i : i + group] for i in range(0, lanes, group)]
    return [result for g in groups for result in run_group(g)]


def train(
    loss: Callable[..., Any],
    params: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    num_steps: int,
    data: Sequence[Any] = (),
    record_every: int = 100,
    sharpness_iters: int = 20,
    key: jax.Array,
    batch_size: int | None = None,
    preconditioner: Callable[[Any], PyTree] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    r"""Train with one optax transformation and record diagnostics (see :func:`sweep`).

    Args:
      loss: the objective ``loss(params, *data) -> scalar``.
      params: :math:`w_0`.
      optimizer: any optax transformation; its ``update`` gets ``value_fn``, ``value`` and
        ``grad`` as extra arguments (plain optax optimizers ignore them).
      num_steps: number of steps (rounded up to a multiple of ``record_every``).
      data: arrays passed to ``loss`` after ``params``.
      record_every: chunk length and sharpness period.
      sharpness_iters: Lanczos iterations per record at most.
      key: PRNG key.
      batch_size: mini-batch size, or ``None`` for full batch.
      preconditioner: ``opt_state -> P`` for the preconditioned sharpness, or ``None``.
      progress: called with the number of steps done after each chunk.

    Returns:
      A :class:`TrainResult`.

    Example:
      Gradient descent at :math:`\eta = 0.4` on :math:`\frac12(w_1^2 + 4 w_2^2)` sits at
      :math:`\eta\lambda_{\max} = 1.6`:

      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> from cdat_core.lab import train, tuners
      >>> loss = lambda w: 0.5 * (w[0] ** 2 + 4.0 * w[1] ** 2)
      >>> opt = optax.chain(optax.sgd(1.0), tuners.scale_by_scheduled_learning_rate(0.4))
      >>> res = train.train(loss, jnp.ones(2), opt, num_steps=10, record_every=5,
      ...                   key=jax.random.key(0))
      >>> [round(float(x), 3) for x in res.history.eos], res.history.learning_rate.shape
      ([1.6, 1.6], (10,))
    """
    (result,) = sweep(
        loss,
        params,
        _kernels.Fixed(optimizer),
        [{}],
        num_steps=num_steps,
        data=data,
        record_every=record_every,
        sharpness_iters=sharpness_iters,
        key=key,
        batch_size=batch_size,
        preconditioner=preconditioner,
        progress=progress,
    )
    return result
