"""Compiled pieces of :mod:`cdat_core.lab.train`: the scanned chunk, the sharpness probe, lanes.

Each builder is cached on its structural arguments (objective, optimizer factory, chunk
length, ...), so that runs differing only in numbers reuse one compilation. Every compiled
function maps over a leading *lane* axis (one run per lane: its params, numbers and PRNG
key); :func:`put_lanes` shards that axis over a 1-D mesh of every local device
(:func:`lane_mesh`), so the same code runs on one CPU, several simulated CPU devices or an
accelerator host. :func:`over_lanes` maps either with ``vmap`` (one batched program) or,
for code that batches poorly, one lane after the other on each device (``shard_map`` over
the mesh, ``lax.map`` inside). Lanczos is such code: its loop counter is per lane under
``vmap``, so reads and writes of its Krylov basis become gathers and scatters, and a
vmapped :func:`cdat_core.hessian_sharpness` measured 20x slower per lane than one lane
(5 Lanczos steps on a 26 000-parameter operator: 75 ms vmapped, 3.3 ms alone); the
sharpness probe therefore always runs lane by lane.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cdat_core import _tree
from cdat_core.curvature import directional_curvature
from cdat_core.sharpness import hessian_sharpness, preconditioner_from_optax_state

PyTree = Any
OptimizerFactory = Callable[[Mapping[str, Any]], optax.GradientTransformation]


def adam_preconditioner(*, b2: float = 0.999, eps: float = 1e-8) -> Callable[[Any], PyTree]:
    r"""Preconditioner :math:`P = \sqrt{\hat\nu} + \varepsilon` of an optax Adam state.

    Returns ``opt_state -> P`` (:func:`cdat_core.preconditioner_from_optax_state` with Adam's
    bias correction), or ``None`` for a state without a second moment ``nu``.

    Args:
      b2: Adam's :math:`\beta_2` (optax's default 0.999).
      eps: Adam's :math:`\varepsilon` (optax's default 1e-8).

    Returns:
      A function of the optimizer state.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from cdat_core.lab import train
      >>> precondition = train.adam_preconditioner()
      >>> P = precondition(optax.adam(1.0).init(jnp.zeros(2)))  # ν = 0: P = ε
      >>> bool(jnp.allclose(P, 1e-8))
      True
      >>> precondition(optax.sgd(1.0).init(jnp.zeros(2))) is None
      True
    """
    return _adam_preconditioner_cached(float(b2), float(eps))


@functools.lru_cache(maxsize=8)
def _adam_preconditioner_cached(b2: float, eps: float) -> Callable[[Any], PyTree]:
    # Cached, so the same numbers give the same function and compiled chunks are reused.
    return functools.partial(_adam_preconditioner, b2=b2, eps=eps)


def _adam_preconditioner(opt_state: Any, *, b2: float, eps: float) -> PyTree | None:
    if not optax.tree.get_all_with_path(opt_state, "nu"):
        return None
    return preconditioner_from_optax_state(opt_state, eps=eps, b2=b2)


class Fixed:
    """A factory that ignores its numbers and returns one transformation (hashable)."""

    def __init__(self, optimizer: optax.GradientTransformation) -> None:
        self.optimizer = optimizer

    def __call__(self, hyperparams: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        return self.optimizer

    def __hash__(self) -> int:
        return hash(self.optimizer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fixed) and other.optimizer is self.optimizer


def _learning_rate(opt_state: Any, dtype: Any) -> jax.Array:
    found = optax.tree.get_all_with_path(opt_state, "learning_rate")
    if len(found) != 1:
        return jnp.full((), jnp.nan, dtype)
    return jnp.asarray(found[0][1]).astype(dtype)


def _internals(opt_state: Any) -> dict[str, jax.Array]:
    """Named scalar fields of the state (NamedTuple attributes), ``learning_rate`` excluded."""
    out: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if jnp.ndim(leaf) != 0 or not path or not hasattr(path[-1], "name"):
            continue
        name = path[-1].name
        if name == "learning_rate":
            continue
        out[jax.tree_util.keystr(path) if name in out else name] = leaf
    return out


def stack_lanes(trees: list[PyTree]) -> PyTree:
    """One pytree whose leaves stack those of ``trees`` along a new leading lane axis.

    Stacked on the host (NumPy), so that no lane count compiles a program of its own.
    """
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def stack_keys(keys: list[jax.Array]) -> jax.Array:
    """PRNG keys stacked along a new leading lane axis (on the host)."""
    impl = jax.random.key_impl(keys[0])
    data = np.stack([np.asarray(jax.random.key_data(k)) for k in keys])
    return jax.random.wrap_key_data(jnp.asarray(data), impl=impl)


@functools.lru_cache(maxsize=4)
def _mesh(devices: tuple[Any, ...]) -> Mesh:
    return Mesh(np.asarray(devices), ("lanes",))


def lane_mesh() -> Mesh:
    """A 1-D mesh (axis ``"lanes"``) of every local device."""
    return _mesh(tuple(jax.local_devices()))


def put_lanes(tree: PyTree) -> PyTree:
    """``tree`` with its leading (lane) axis sharded over :func:`lane_mesh`."""
    return jax.device_put(tree, NamedSharding(lane_mesh(), PartitionSpec("lanes")))


def over_lanes(
    fn: Callable[..., Any], in_axes: tuple[int | None, ...], *, sequential: bool
) -> Callable[..., Any]:
    """``fn`` mapped over the lanes of its ``in_axes == 0`` arguments, jitted.

    Args:
      fn: a function of one lane.
      in_axes: per positional argument, ``0`` (it has a lane axis) or ``None`` (shared).
      sequential: run each device's lanes one after the other (``lax.map`` inside a
        ``shard_map`` over :func:`lane_mesh`; the lane count must be a multiple of the
        device count, as :func:`cdat_core.lab.train.run_lanes` pads it), else ``vmap``.

    Returns:
      The jitted function of the stacked arguments; outputs have a leading lane axis.
    """
    if not sequential:
        return jax.jit(jax.vmap(fn, in_axes=in_axes))

    def per_device(*args: Any) -> Any:
        lanes = tuple(a for a, ax in zip(args, in_axes, strict=True) if ax == 0)

        def one(lane: tuple[Any, ...]) -> Any:
            it = iter(lane)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes, strict=True)))

        return jax.lax.map(one, lanes)

    specs = tuple(PartitionSpec("lanes") if ax == 0 else PartitionSpec() for ax in in_axes)
    return jax.jit(
        jax.shard_map(
            per_device,
            mesh=lane_mesh(),
            in_specs=specs,
            out_specs=PartitionSpec("lanes"),
            check_vma=False,
        )
    )


def put_replicated(tree: PyTree) -> PyTree:
    """``tree`` replicated on every device of :func:`lane_mesh`."""
    return jax.device_put(tree, NamedSharding(lane_mesh(), PartitionSpec()))


@functools.lru_cache(maxsize=64)
def compiled(
    loss: Callable[..., Any],
    make_optimizer: OptimizerFactory,
    length: int,
    batch_size: int | None,
    sequential: bool = False,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(init, chunk), jitted and mapped over lanes (see :func:`over_lanes`), for one optimizer."""

    def init(params: PyTree, hyperparams: Mapping[str, jax.Array]) -> Any:
        return make_optimizer(hyperparams).init(params)

    def chunk(carry: Any, hyperparams: Mapping[str, jax.Array], data: Any, key: jax.Array):
        optimizer = make_optimizer(hyperparams)
        dtype = _tree.accumulation_dtype(*(x.dtype for x in jax.tree.leaves(carry[0])))
        num_examples = jax.tree.leaves(data)[0].shape[0] if data else 0

        def step(carry: Any, _: None) -> tuple[Any, Any]:
            params, opt_state, t, previous = carry
            if batch_size is None:
                batch = data
            else:
                k = jax.random.fold_in(key, t)
                idx = jax.random.choice(k, num_examples, (batch_size,), replace=False)
                batch = jax.tree.map(lambda x: x[idx], data)

            def fun(w: PyTree) -> jax.Array:
                return loss(w, *batch)

            value, grad = jax.value_and_grad(fun)(params)
            updates, opt_state = optimizer.update(
                grad, opt_state, params, value_fn=fun, value=value, grad=grad
            )
            params = optax.apply_updates(params, updates)
            record = (
                jnp.asarray(value).astype(dtype),
                _learning_rate(opt_state, dtype),
                _tree.norm(grad).astype(dtype),
                _internals(opt_state),
                _cosine(updates, previous, dtype),
            )
            return (params, opt_state, t + 1, _tree.cast_like(updates, previous)), record

        return jax.lax.scan(step, carry, None, length=length)

    return (
        jax.jit(jax.vmap(init)),
        over_lanes(chunk, (0, 0, None, 0), sequential=sequential),
    )


def _cosine(a: PyTree, b: PyTree, dtype: Any) -> jax.Array:
    """cos(a, b), 0 when either is zero (the first step has no previous update)."""
    norms = _tree.norm(a).astype(dtype) * _tree.norm(b).astype(dtype)
    dot = _tree.vdot(a, b).astype(dtype)
    return jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1), 0).astype(dtype)


@functools.lru_cache(maxsize=16)
def precondition_fn(preconditioner: Callable[[Any], PyTree]) -> Callable[..., Any]:
    return jax.jit(jax.vmap(preconditioner))


@functools.lru_cache(maxsize=32)
def measure_fn(
    loss: Callable[..., Any], preconditioned: bool, sharpness_iters: int, instant: bool = False
) -> Callable[..., Any]:
    r"""Full-data diagnostics at a record, jitted, lane by lane on each device.

    ``measure(params, P, v0, data, update)`` returns the loss, the warm-started sharpness,
    whether Lanczos converged, the top eigenvector, the *alignment*
    :math:`|\langle \tilde u, v_{\max}\rangle| / \|\tilde u\|` of the last update
    :math:`u` with it (:math:`\tilde u = P^{1/2} u`, the update in the coordinates where the
    preconditioned Hessian :math:`P^{-1/2} H P^{-1/2}` acts; :math:`\tilde u = u` without
    :math:`P`; Fig. 12, 17) and, with ``instant``, the *instant gap*
    :math:`f(w + \eta_{oe} u) - f(w + \eta_{qg} u)` along the gradient-descent direction
    :math:`u = -\nabla f(w)` (eqs (7) and (3): :math:`\eta_{qg} = n/d`, :math:`\eta_{oe} =
    2n/d`), positive when the greedy step decreases the loss more (Fig. 16); NaN without
    ``instant``. The gap costs a gradient, a curvature and two losses per record.
    """

    def measure(params: PyTree, scaling: PyTree, v0: PyTree, data: Any, update: PyTree) -> Any:
        def fun(w: PyTree) -> jax.Array:
            return loss(w, *data)

        result = hessian_sharpness(
            fun,
            params,
            v0=v0,
            num_iters=sharpness_iters,
            preconditioner=scaling if preconditioned else None,
        )
        finite = _tree.all_finite(params)
        sharpness = jnp.where(finite, result.eigenvalues[0], jnp.nan)
        value = fun(params)
        dtype = jnp.result_type(value)
        moved = update
        if preconditioned:
            moved = jax.tree.map(lambda u, p: u * jnp.sqrt(jnp.maximum(p, 0)), update, scaling)
        top = jax.tree.map(lambda v: v[0], result.eigenvectors)
        norm = _tree.norm(moved).astype(dtype)
        overlap = jnp.abs(_tree.vdot(moved, _tree.cast_like(top, moved))).astype(dtype)
        alignment = jnp.where(norm > 0, overlap / jnp.where(norm > 0, norm, 1), jnp.nan)
        gap = jnp.full((), jnp.nan, dtype)
        if instant:
            gap = _instant_gap(fun, params, value).astype(dtype)
        return value, sharpness, result.converged, result.eigenvectors, alignment, gap

    return over_lanes(measure, (0, 0 if preconditioned else None, 0, None, 0), sequential=True)


def _instant_gap(fun: Callable[[PyTree], jax.Array], params: PyTree, value: jax.Array) -> Any:
    grad = jax.grad(fun)(params)
    u = _tree.scale(-1.0, grad)
    n = _tree.sq_norm(grad)
    d = jnp.abs(directional_curvature(fun, params, u).curvature)
    ok = (d > 0) & jnp.isfinite(n) & jnp.isfinite(d) & jnp.isfinite(value)
    greedy = jnp.where(ok, n / jnp.where(ok, d, 1), 0)
    on_edge = fun(_tree.axpy(2 * greedy, u, params))
    quadratic_greedy = fun(_tree.axpy(greedy, u, params))
    return jnp.where(ok, on_edge - quadratic_greedy, jnp.nan)


@functools.lru_cache(maxsize=16)
def initial_sharpness_fn(loss: Callable[..., Any], sharpness_iters: int) -> Callable[..., Any]:
    def initial(params: PyTree, data: Any, key: jax.Array) -> Any:
        result = hessian_sharpness(
            lambda w: loss(w, *data), params, key=key, num_iters=sharpness_iters
        )
        return result.eigenvalues[0], result.eigenvectors

    return jax.jit(initial)
