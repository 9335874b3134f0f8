r"""Glue between the tuners and models written with flax (nnx and linen) and equinox.

The tuners call ``value_fn(params, **kw)`` on the same pytree the optimizer updates. Two
frameworks hide that pytree behind an object, and need a few lines that this module holds:

- :func:`nnx_value_fn` (flax.nnx): ``nnx.Optimizer.update(model, grads, **kw)`` forwards
  ``kw`` to the transformation, but hands it the *pure* ``Param`` state, not the module, so
  the natural ``value_fn=lambda model, x, y: ...`` fails with ``'State' object is not
  callable``; and a merged module that shares the caller's ``Rngs`` variables (dropout) fails
  with ``TraceContextError`` when the tuner differentiates through it. The helper splits the
  module once, snapshots the non-``Param`` state as plain arrays and rebuilds the module from
  the params it is given, so every evaluation in a step sees the same dropout mask.
- :func:`apply_gradients` (flax linen ``TrainState``): ``TrainState.apply_gradients(grads=...,
  **kw)`` sends ``kw`` to ``replace``, never to ``tx.update``, so a tuner behind it never
  gets ``value_fn``. This is its three lines with the extra arguments forwarded.

equinox needs no helper: ``params, static = eqx.partition(model, eqx.is_inexact_array)`` and
``value_fn = lambda p, x, y: loss(eqx.combine(p, static), x, y)`` are the whole path (the
README's framework section and ``examples/`` show each one). flax is imported only inside
:func:`nnx_value_fn`, so ``cdat_core`` stays importable without flax or equinox.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import optax

__all__ = ["apply_gradients", "nnx_value_fn"]

PyTree = Any


def nnx_value_fn(model: Any, loss: Callable[..., Any], *, wrt: Any = None) -> Callable[..., Any]:
    r"""The ``value_fn`` of a flax.nnx module, over the ``wrt`` state ``nnx.Optimizer`` updates.

    Returns ``value_fn(params, **kw) = loss(nnx.merge(graphdef, params, rest), **kw)`` where
    ``graphdef, _, rest = nnx.split(model, wrt, ...)`` is taken now and ``rest`` (every
    variable outside ``wrt``: ``Rngs`` keys and counts, batch statistics, ...) is kept as
    plain arrays. ``value_fn``'s signature is ``loss``'s with the module replaced by
    ``params``, so the tuners pass it exactly the extra arguments ``loss`` names.

    Why a snapshot: each call builds a fresh module inside the tuner's own JAX
    transformation (forward-over-forward JVPs, trial steps), where mutating it is allowed,
    and discards the mutation. So a module with ``nnx.Dropout`` draws the *same* mask at
    every evaluation of one step: the tuner measures slope and curvature of one objective.
    Build ``value_fn`` *before* ``nnx.grad(loss)(model, ...)``, which then draws that same
    mask and advances the module's ``Rngs`` for the next step. Mutations made by ``loss``
    (batch statistics) are not written back; return them as aux (``has_aux``) if you need
    them, or update them in a separate forward pass.

    Call it inside the jitted train step (``nnx.jit``), once per step, with the same
    ``wrt`` as ``nnx.Optimizer(model, tx, wrt=...)``.

    Args:
      model: the ``nnx.Module`` being trained.
      loss: ``loss(model, **kw)`` returning a scalar (or ``(loss, aux)`` for a tuner built
        with ``has_aux=True``); its first parameter takes the module, positionally.
      wrt: the filter of the trained variables, ``nnx.Param`` when ``None`` (the
        ``nnx.Optimizer`` default).

    Returns:
      ``value_fn(params, **kw)`` for ``optimizer.update(model, grads, value_fn=value_fn,
      **kw)``, or for ``tx.update(..., value_fn=value_fn)`` on ``nnx.split`` params.

    Raises:
      TypeError: ``model`` is not an ``nnx.Module`` (a graphdef or a state is refused), or
        ``loss`` is not callable; ``value_fn`` called with a module instead of its state.
      ValueError: ``wrt`` selects no variable of ``model``; ``value_fn`` called with params
        whose structure differs from ``nnx.state(model, wrt)`` (e.g. another ``wrt``).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> import cdat_core as cc
      >>> from cdat_core.frameworks import nnx_value_fn
      >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> def loss(m, x, y):
      ...     return jnp.mean((m(x) - y) ** 2)
      >>> optimizer = nnx.Optimizer(model, cc.cdat(optax.sgd(1.0), sigma=1.0), wrt=nnx.Param)
      >>> @nnx.jit
      ... def train_step(model, optimizer, x, y):
      ...     value_fn = nnx_value_fn(model, loss)  # before nnx.grad: same dropout mask
      ...     grads = nnx.grad(loss)(model, x, y)
      ...     optimizer.update(model, grads, value_fn=value_fn, x=x, y=y)
      >>> before = float(loss(model, x, y))
      >>> train_step(model, optimizer, x, y)
      >>> print(before > 0.0, float(loss(model, x, y)) < 1e-6)  # greedy step on a quadratic
      True True
    """
    from flax import nnx

    name = "nnx_value_fn"
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"{name}: model must be the nnx.Module being trained, got {type(model).__name__} "
            f"(the helper splits the module itself; pass it, not a graphdef or a state)."
        )
    if not callable(loss):
        raise TypeError(f"{name}: loss must be callable as loss(model, **kw), got {loss!r}.")
    wrt = nnx.Param if wrt is None else wrt
    # unused-ignore: mypy sees no error when flax is not installed (the typecheck session).
    graphdef, params, rest = nnx.split(model, wrt, ...)  # type: ignore[misc,unused-ignore]
    if not jax.tree.leaves(params):
        raise ValueError(f"{name}: wrt={wrt!r} selects no variable of the model.")
    expected: Any = jax.tree.structure(nnx.as_pure(params))
    rest = nnx.as_pure(rest)  # plain arrays: merging makes fresh variables, never shared ones

    def value_fn(params: PyTree, /, **kwargs: Any) -> Any:
        if isinstance(params, nnx.Module):
            raise TypeError(
                f"value_fn from {name} takes the {wrt!r} state of the module (what "
                f"nnx.Optimizer.update passes), not the module itself."
            )
        params = nnx.as_pure(params)
        got = jax.tree.structure(params)
        if got != expected:
            raise ValueError(
                f"value_fn from {name} got params whose structure differs from "
                f"nnx.state(model, wrt) with wrt={wrt!r}: pass {name} the same wrt as "
                f"nnx.Optimizer(model, tx, wrt=...).\nexpected: {expected}\ngot: {got}"
            )
        return loss(nnx.merge(graphdef, params, rest), **kwargs)

    value_fn.__signature__ = _with_params_first(loss, name)  # type: ignore[attr-defined]
    value_fn.__doc__ = f"{getattr(loss, '__name__', 'loss')} over the {wrt!r} state."
    return value_fn


def _with_params_first(loss: Callable[..., Any], name: str) -> inspect.Signature:
    """``loss``'s signature with its first parameter replaced by positional ``params``.

    The tuners pass ``value_fn`` only the extra arguments its signature names; copying
    ``loss``'s keeps that filter exact. A ``loss`` without a signature gets ``**kwargs``.
    """
    first = inspect.Parameter("params", inspect.Parameter.POSITIONAL_ONLY)
    try:
        signature = inspect.signature(loss)
    except (TypeError, ValueError):
        return inspect.Signature(
            [first, inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
        )
    parameters = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not parameters or parameters[0].kind not in positional:
        raise TypeError(
            f"{name}: loss must take the module as its first positional parameter, "
            f"loss(model, **kw); got the signature {signature}."
        )
    return signature.replace(parameters=[first, *parameters[1:]])


def apply_gradients(state: Any, *, grads: PyTree, **extra_args: Any) -> Any:
    r"""``TrainState.apply_gradients`` that forwards the extra arguments to ``tx.update``.

    flax's own ``state.apply_gradients(grads=g, **kw)`` passes ``kw`` to ``state.replace``,
    so a tuner never receives ``value_fn``. This does the same step, with ``kw`` given to
    ``state.tx.update``: it returns ``state.replace(step=step + 1, params=new_params,
    opt_state=new_opt_state)``. Any object with the fields ``step``, ``params``, ``tx``,
    ``opt_state`` and a ``replace`` method works (flax's ``TrainState`` and subclasses,
    e.g. one that also carries ``batch_stats``); flax is not imported.

    Args:
      state: a ``flax.training.train_state.TrainState`` (or the like).
      grads: the gradient, the same pytree as ``state.params``.
      **extra_args: passed to ``state.tx.update``: ``value_fn=`` and the arguments it names.

    Returns:
      The new state.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import flax.linen as nn
      >>> from flax.training import train_state
      >>> import cdat_core as cc
      >>> from cdat_core.frameworks import apply_gradients
      >>> module = nn.Dense(1)
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> params = module.init(jax.random.key(0), x)["params"]
      >>> state = train_state.TrainState.create(
      ...     apply_fn=module.apply, params=params, tx=cc.cdat(optax.sgd(1.0), sigma=1.0))
      >>> def loss(params, x, y):
      ...     return jnp.mean((module.apply({"params": params}, x) - y) ** 2)
      >>> grads = jax.grad(loss)(state.params, x, y)
      >>> state = apply_gradients(state, grads=grads, value_fn=loss, x=x, y=y)
      >>> print(int(state.step), float(loss(state.params, x, y)) < 1e-6)
      1 True
    """
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, **extra_args)
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
    )
