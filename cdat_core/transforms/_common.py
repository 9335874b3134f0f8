r"""Private pieces shared by the tuners of :mod:`cdat_core.transforms`.

- ``_value_fn_kwargs`` / ``_objective``: the objective ``value_fn(params, **kw)`` called with
  only the extra arguments its signature names;
- ``_value_and_grad``: :math:`f(w)` and :math:`\nabla f(w)` from the extra arguments
  ``value`` and ``grad`` when given, else computed from ``value_fn``;
- ``_check_params`` / ``_scalar_dtype``: argument checks and the dtype of the scalar state;
- ``_scaled``: the update :math:`\eta u` where it is taken, exactly zero elsewhere (by
  ``where``, never by multiplying).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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


def _objective(value_fn: Callable[..., Any] | None, extra_args: dict[str, Any], name: str):
    if value_fn is None:
        raise TypeError(
            f"{name}.update needs the objective: call update(updates, state, params, "
            f"value_fn=loss, ...), with loss(params, **kwargs) returning a scalar."
        )
    kwargs = _value_fn_kwargs(value_fn, extra_args)
    return lambda p: value_fn(p, **kwargs)


def _check_params(params: PyTree, updates: PyTree, name: str) -> None:
    if params is None:
        raise TypeError(f"{name}.update needs params (the point the objective is evaluated at).")
    _tree.match_dtypes(params, updates, "updates")


def _scalar_dtype(params: PyTree) -> Any:
    return _tree.accumulation_dtype(*(jnp.result_type(x) for x in jax.tree.leaves(params)))


def _scaled(learning_rate: jax.Array, updates: PyTree, take: jax.Array) -> PyTree:
    """``learning_rate * updates`` where ``take`` holds, exactly zero elsewhere."""
    safe = jnp.where(take, learning_rate, 0.0)
    return _tree.where(take, _tree.scale(safe, updates), _tree.zeros_like(updates))


def _value_and_grad(
    value_fn: Callable[..., Any] | None,
    extra_args: dict[str, Any],
    params: PyTree,
    value: Any,
    grad: Any,
    name: str,
) -> tuple[Callable[[PyTree], Any], jax.Array, PyTree]:
    """The objective, and f(w) and ∇f(w): from the extra arguments when given, else computed."""
    fun = _objective(value_fn, extra_args, name)
    if value is None or grad is None:
        value, grad = jax.value_and_grad(_tree.scalar_output(fun, "value_fn"))(params)
    return fun, jnp.asarray(value), _tree.match_dtypes(params, grad, "grad")
