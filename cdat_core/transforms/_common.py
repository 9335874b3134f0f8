r"""Private pieces shared by the tuners of :mod:`cdat_core.transforms`.

- ``_value_fn_kwargs`` / ``_objective``: the objective ``value_fn(params, **kw)`` called with
  only the extra arguments its signature names, reduced to its loss when it returns
  ``(loss, aux)`` (``has_aux``), with trace-time errors when its output does not match
  ``has_aux``; ``_check_has_aux``: the build-time check of that flag;
- ``_value_and_grad``: :math:`f(w)` and :math:`\nabla f(w)` from the extra arguments
  ``value`` and ``grad`` when given, else computed from ``value_fn``;
- ``_check_params`` / ``_scalar_dtype``: argument checks (params as arrays of floats) and the
  dtype of the scalar state;
- ``_check_hyperparameter``: build-time range checks of concrete hyperparameters, with a
  ``ValueError`` that names the argument; ``_all_finite``: the finiteness flag of a step;
- ``_scaled``: the update :math:`\eta u` where it is taken, exactly zero elsewhere (by
  ``where``, never by multiplying).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cdat_core import _tree

PyTree = Any


def _value_fn_kwargs(value_fn: Callable[..., Any], extra_args: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``extra_args`` that ``value_fn``'s signature names (all if ``**kw``)."""
    try:
        parameters = inspect.signature(value_fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: pass nothing
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(extra_args)
    names = {
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in extra_args.items() if k in names}


def _check_has_aux(name: str, has_aux: Any) -> bool:
    """``has_aux`` as a Python bool, or a ``TypeError`` naming it (it is structural)."""
    if not isinstance(has_aux, bool):
        raise TypeError(
            f"{name}: has_aux must be True or False (a Python bool, fixed when the "
            f"transformation is built), got {has_aux!r}."
        )
    return has_aux


def _describe(out: Any) -> str:
    """A short description of a value_fn output for error messages."""
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of {len(out)} elements"
    shape = getattr(out, "shape", None)
    if shape == ():
        return "a scalar"
    return f"an array of shape {shape}" if shape is not None else f"a {type(out).__name__}"


def _loss_of(out: Any, has_aux: bool, name: str) -> Any:
    """The loss in ``value_fn``'s output: ``out`` itself, or ``out[0]`` of ``(loss, aux)``.

    Runs at trace time. ``has_aux=True`` with anything but a pair (a tuple or list of two, as
    ``jax.value_and_grad(..., has_aux=True)`` wants) is a ``ValueError`` naming ``value_fn``
    and ``has_aux``; ``has_aux=False`` with a tuple or list is a ``TypeError`` (like any
    non-scalar output) that suggests ``has_aux=True``. The loss is then checked to be a real
    floating-point scalar (``TypeError``).
    """
    if has_aux:
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ValueError(
                f"{name} was built with has_aux=True, so value_fn must return a pair "
                f"(loss, aux), but it returned {_describe(out)}. Return (loss, aux), or build "
                f"{name}(..., has_aux=False) for a value_fn that returns the loss alone."
            )
        loss = out[0]
        _tree.check_scalar_output(loss, "value_fn (the loss, first element of its pair)")
        return loss
    if isinstance(out, tuple | list):
        raise TypeError(
            f"value_fn must return a scalar loss, but it returned {_describe(out)}. If it "
            f"returns (loss, aux), build {name}(..., has_aux=True): the tuner then uses the "
            f"loss and drops aux (read aux from your own "
            f"jax.value_and_grad(loss_fn, has_aux=True) at the same params)."
        )
    _tree.check_scalar_output(out, "value_fn")
    return out


def _objective(
    value_fn: Callable[..., Any] | None,
    extra_args: dict[str, Any],
    name: str,
    has_aux: bool = False,
) -> Callable[[PyTree], Any]:
    """``params -> loss``: ``value_fn`` with its keyword arguments, reduced to its loss.

    With ``has_aux`` the ``aux`` of ``value_fn``'s ``(loss, aux)`` is dropped here, before
    any JVP, gradient or trial sees it: no tangent is pushed through ``aux`` (whose integer
    or boolean leaves would otherwise need ``float0`` tangents), and under ``jit`` XLA
    removes the computation of ``aux`` from the tuner's passes as dead code.
    """
    if value_fn is None:
        raise TypeError(
            f"{name}.update needs the objective: call update(updates, state, params, "
            f"value_fn=loss, ...), with loss(params, **kwargs) returning "
            + ("a pair (loss, aux) with a scalar loss (has_aux=True)." if has_aux else "a scalar.")
        )
    kwargs = _value_fn_kwargs(value_fn, extra_args)

    def objective(p: PyTree) -> Any:
        return _loss_of(value_fn(p, **kwargs), has_aux, name)

    return objective


def _check_params(params: PyTree, updates: PyTree, name: str) -> tuple[PyTree, PyTree]:
    """Check ``params`` and ``updates``; return both with every leaf as a JAX array.

    Python-float leaves work (they become weakly typed arrays); integer leaves, a missing
    ``params`` or ``updates`` unlike ``params`` raise an error that names the argument.
    """
    if params is None:
        raise TypeError(f"{name}.update needs params (the point the objective is evaluated at).")
    params = _as_arrays(params)
    updates = _tree.match_dtypes(params, _as_arrays(updates), "updates")
    return params, updates


def _as_arrays(tree: PyTree) -> PyTree:
    """Every leaf as a JAX array (Python and NumPy numbers included)."""
    return jax.tree.map(jnp.asarray, tree)


def _scalar_dtype(params: PyTree) -> Any:
    """The dtype of a tuner's scalar state; raises ``TypeError`` for non-float ``params``."""
    _tree.check_float_tree(params, "params")
    return _tree.accumulation_dtype(*(jnp.result_type(x) for x in jax.tree.leaves(params)))


def _scaled(learning_rate: jax.Array, updates: PyTree, take: jax.Array) -> PyTree:
    """``learning_rate * updates`` where ``take`` holds and the rate is not 0, else +0 exactly."""
    take = take & (learning_rate != 0)
    safe = jnp.where(take, learning_rate, 0.0)
    return _tree.where(take, _tree.scale(safe, updates), _tree.zeros_like(updates))


def _check_scalar_value(value: Any) -> jax.Array:
    """``value`` (the extra argument, :math:`f(w)`) as a scalar array, or a ``ValueError``."""
    if isinstance(value, tuple | list):
        raise ValueError(
            f"value must be a scalar, f(params); got {_describe(value)}. With a value_fn "
            f"that returns (loss, aux), pass value=loss, the first element of the pair."
        )
    value = jnp.asarray(value)
    if value.shape != ():
        raise ValueError(
            f"value must be a scalar, f(params); got an array of shape {value.shape} "
            f"(reduce the loss, e.g. with jnp.mean, before passing it as value=)."
        )
    return value


def _value_and_grad(
    value_fn: Callable[..., Any] | None,
    extra_args: dict[str, Any],
    params: PyTree,
    value: Any,
    grad: Any,
    name: str,
    *,
    need_objective: bool = True,
    has_aux: bool = False,
) -> tuple[Callable[[PyTree], Any] | None, jax.Array, PyTree]:
    r"""The objective, and f(w) and ∇f(w): from the extra arguments when given, else computed.

    With ``need_objective=False`` (a tuner that only needs :math:`f(w)` and
    :math:`\nabla f(w)`, as ``optax.polyak_sgd`` is called) ``value_fn`` may be omitted when
    ``value`` and ``grad`` are both given; the objective returned is then ``None``. A non-scalar
    ``value`` raises a ``ValueError`` that names it. With ``has_aux`` the objective returned
    is the loss alone (see :func:`_objective`).
    """
    fun = None
    if need_objective or value is None or grad is None:
        fun = _objective(value_fn, extra_args, name, has_aux)
    if value is None or grad is None:
        assert fun is not None
        value, grad = jax.value_and_grad(fun)(params)  # fun checks value_fn's output
    return fun, _check_scalar_value(value), _tree.match_dtypes(params, grad, "grad")


# --------------------------------------------------------------------------------------------
# Hyperparameters: concrete numbers are checked when the transformation is built; traced ones
# (optax.inject_hyperparams under jit) are sanitised by each tuner, as its factory documents.
# --------------------------------------------------------------------------------------------


def _concrete_number(value: Any) -> float | None:
    """``value`` as a float when it is a known real number, else ``None``.

    Python and NumPy numbers and concrete 0-d arrays (as ``optax.inject_hyperparams`` passes
    them outside ``jit``) are known; tracers, bools and arrays with more dimensions are not.
    """
    if isinstance(value, bool | jax.core.Tracer):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, np.ndarray | jax.Array) and value.shape == ():
        if jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating):
            return float(value)
    return None


def _check_hyperparameter(
    name: str,
    argument: str,
    value: Any,
    *,
    low: float | None = 0.0,
    below: float | None = None,
    allow_inf: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``argument`` when a concrete ``value`` is out of range.

    The range is ``[low, below)`` (either end may be ``None``); NaN is always rejected and
    ``inf`` only allowed with ``allow_inf``. Traced values are not checked here.
    """
    x = _concrete_number(value)
    if x is None:
        return
    if low is None and below is None:
        wanted = "a finite number"
    elif below is None:
        wanted = f">= {low:g}" + (" (inf allowed)" if allow_inf else " and finite")
    else:
        wanted = f"in [{low:g}, {below:g})"
    bad = (
        math.isnan(x)
        or (math.isinf(x) and not (allow_inf and x > 0))
        or (low is not None and x < low)
        or (below is not None and x >= below)
    )
    if bad:
        raise ValueError(f"{name}: {argument} must be {wanted}, got {value!r}.")


def _all_finite(*xs: Any) -> jax.Array:
    """True when every scalar or pytree in ``xs`` is finite (``None`` counts as finite)."""
    out = jnp.asarray(True)
    for x in xs:
        if x is not None:
            out = out & _tree.all_finite(x)
    return out
