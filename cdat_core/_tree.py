"""Sharding-safe pytree algebra shared by every module of cdat_core.

Inner products are written as ``sum(jnp.sum(x * y))`` over leaves: an elementwise product
and a full reduction of each leaf, then a Python sum of scalars. Unlike ``jnp.vdot`` or
``ravel_pytree`` this never reshapes or concatenates leaves, so it runs unchanged on arrays
sharded across devices (explicit or automatic mesh axes). Reductions accumulate in at least
float32, so bfloat16 and float16 leaves do not lose the answer; elementwise results keep the
dtype of their inputs.

These helpers are private to the package; the structural checks raise at trace time with a
message that names the offending argument.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Scalar = jax.Array


def accumulation_dtype(*dtypes: Any) -> np.dtype:
    """Return the dtype reductions over ``dtypes`` accumulate in: the widest float, at least f32.

    Written out rather than with ``jnp.promote_types``, which refuses float32 with float64 under
    ``jax_numpy_dtype_promotion="strict"``. Non-float dtypes are ignored.
    """
    out = np.dtype(jnp.float32)
    for d in dtypes:
        d = np.dtype(d)
        if jnp.issubdtype(d, jnp.floating) and d.itemsize > out.itemsize:
            out = d
    return np.dtype(jax.dtypes.canonicalize_dtype(out))


def _leaf_dtypes(*trees: PyTree) -> list[np.dtype]:
    return [np.dtype(jnp.result_type(x)) for t in trees for x in jax.tree.leaves(t)]


def _sum_scalars(terms: Sequence[jax.Array], dtype: np.dtype) -> jax.Array:
    if not terms:
        return jnp.zeros((), dtype)
    return functools.reduce(operator.add, [t.astype(dtype) for t in terms])


def vdot(x: PyTree, y: PyTree) -> Scalar:
    """Inner product ``sum_leaves sum(x * y)`` accumulated in at least float32.

    Both trees must have the same structure. An empty tree gives 0.
    """
    dtype = accumulation_dtype(*_leaf_dtypes(x, y))
    terms = jax.tree.leaves(
        jax.tree.map(
            lambda a, b: jnp.sum(jnp.asarray(a).astype(dtype) * jnp.asarray(b).astype(dtype)), x, y
        )
    )
    return _sum_scalars(terms, dtype)


def sq_norm(x: PyTree) -> Scalar:
    """Squared Euclidean norm of a pytree, accumulated in at least float32."""
    return vdot(x, x)


def norm(x: PyTree) -> Scalar:
    """Euclidean norm of a pytree; its gradient at 0 is 0, not NaN."""
    sq = sq_norm(x)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0).astype(sq.dtype)


def scale(alpha: Any, x: PyTree) -> PyTree:
    """Return ``alpha * x`` leafwise; each leaf keeps its dtype."""

    def leaf(a: jax.Array) -> jax.Array:
        a = jnp.asarray(a)  # Python and NumPy numbers too
        dtype = accumulation_dtype(a.dtype)
        return (jnp.asarray(alpha, dtype) * a.astype(dtype)).astype(a.dtype)

    return jax.tree.map(leaf, x)


def axpy(alpha: Any, x: PyTree, y: PyTree) -> PyTree:
    """Return ``alpha * x + y`` leafwise; each leaf keeps the dtype of ``y``."""

    def leaf(a: jax.Array, b: jax.Array) -> jax.Array:
        a, b = jnp.asarray(a), jnp.asarray(b)  # Python and NumPy numbers too
        dtype = accumulation_dtype(a.dtype, b.dtype)
        return (jnp.asarray(alpha, dtype) * a.astype(dtype) + b.astype(dtype)).astype(b.dtype)

    return jax.tree.map(leaf, x, y)


def add(x: PyTree, y: PyTree) -> PyTree:
    """Return ``x + y`` leafwise; each leaf keeps the dtype of ``y``."""
    return axpy(1.0, x, y)


def zeros_like(x: PyTree) -> PyTree:
    """Zeros with the structure, shapes, dtypes and shardings of ``x``."""
    return jax.tree.map(jnp.zeros_like, x)


def where(condition: Any, x: PyTree, y: PyTree) -> PyTree:
    """Select ``x`` where the scalar ``condition`` holds, else ``y`` (no multiplication)."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), x, y)


def all_finite(x: PyTree) -> jax.Array:
    """True when every entry of every leaf is finite (True for an empty tree)."""
    flags = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(x)]
    if not flags:
        return jnp.asarray(True)
    return functools.reduce(jnp.logical_and, flags)


def cast_like(x: PyTree, like: PyTree) -> PyTree:
    """Cast each leaf of ``x`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda a, b: jnp.asarray(a).astype(jnp.result_type(b)), x, like)


def explicit_sharding(leaf: jax.Array) -> Any:
    """The sharding of ``leaf`` when it is split over explicit mesh axes, else ``None``."""
    sharding = jax.typeof(leaf).sharding
    spec = getattr(sharding, "spec", ())
    return sharding if any(axis is not None for axis in spec) else None


def _normal_leaf(key: jax.Array, leaf: Any, dtype: Any) -> jax.Array:
    if isinstance(leaf, jax.core.Tracer):
        return jax.random.normal(key, leaf.shape, dtype, out_sharding=explicit_sharding(leaf))
    # Outside jit there may be no mesh context: draw, then place like the leaf (same bits).
    draw = jax.random.normal(key, np.shape(leaf), dtype)
    sharding = getattr(leaf, "sharding", None)  # NumPy arrays and Python floats have none
    return draw if sharding is None else jax.device_put(draw, sharding)


def normal_like(key: jax.Array, tree: PyTree) -> PyTree:
    """Standard normal pytree like ``tree``, one split key per leaf, sharded like each leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    out = [_normal_leaf(k, x, jnp.result_type(x)) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, out)


# --------------------------------------------------------------------------------------------
# Trace-time checks with messages that name the arguments.
# --------------------------------------------------------------------------------------------


def check_structural_int(value: Any, name: str) -> int:
    """Return ``value`` as a Python int >= 1, or raise: structural settings bound at trace time.

    ``TypeError`` for a traced value, a bool or a non-integer; ``ValueError`` below 1. A traced
    value most often comes from ``optax.inject_hyperparams``, which traces every numeric
    argument unless it is named in ``static_args``: the message says so.
    """
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} is structural: pass a Python int (it is bound at trace time), got a traced "
            f"{type(value).__name__}. Under optax.inject_hyperparams, name it in static_args: "
            f"optax.inject_hyperparams(..., static_args=({name!r},))."
        )
    if isinstance(value, bool):
        raise TypeError(f"{name} is structural: pass a Python int, got {value!r}.")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} is structural: pass a Python int, got {value!r}.") from None
    if out < 1:
        raise ValueError(f"{name} must be at least 1, got {out}.")
    return out


def check_float_tree(tree: PyTree, name: str) -> None:
    """Raise ``TypeError`` unless every leaf of ``tree`` is a real floating-point array."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} has dtype {dtype}; cdat_core differentiates "
                f"through {name}, so every leaf must be a real floating-point array "
                f"(cast it, e.g. with .astype(jnp.float32))."
            )


def check_same_structure(
    tree: PyTree, other: PyTree, name: str = "params", other_name: str = "direction"
) -> None:
    """Raise ``ValueError`` unless both trees have the same structure and leaf shapes."""
    struct, other_struct = jax.tree.structure(tree), jax.tree.structure(other)
    if struct != other_struct:  # type: ignore[operator]  # jaxlib stubs lack __ne__
        raise ValueError(
            f"{other_name} must have the same pytree structure as {name}; got\n"
            f"  {name}:       {struct}\n  {other_name}: {other_struct}"
        )
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(other), strict=True
    ):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"{other_name}{jax.tree_util.keystr(path)} has shape {jnp.shape(b)} but "
                f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(a)}."
            )


def check_scalar_output(value: Any, name: str = "fun") -> None:
    """Raise ``TypeError`` unless ``value`` is a real floating-point scalar."""
    shape = jnp.shape(value)
    dtype = jnp.result_type(value)
    if shape != ():
        raise TypeError(
            f"{name} must return a scalar, but it returned an array of shape {shape}; "
            f"reduce it (e.g. with jnp.mean) before passing it to cdat_core."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must return a real floating-point scalar, got dtype {dtype}.")


def scalar_output(fun: Callable[..., Any], name: str = "fun") -> Callable[..., Any]:
    """Wrap ``fun`` so that a non-scalar or non-float output raises a clear ``TypeError``."""

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = fun(*args, **kwargs)
        check_scalar_output(out, name)
        return out

    return wrapped


def match_dtypes(params: PyTree, vector: PyTree, name: str = "direction") -> PyTree:
    """Check ``vector`` against ``params`` and cast its leaves to the params' dtypes."""
    check_float_tree(params, "params")
    check_same_structure(params, vector, "params", name)
    check_float_tree(vector, name)
    return cast_like(vector, params)
