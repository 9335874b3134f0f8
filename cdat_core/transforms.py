r"""optax transformations that scale a base optimizer's direction by a tuned learning rate.

Each factory returns an :class:`optax.GradientTransformationExtraArgs` meant to come last in
``optax.chain``, after a base optimizer at learning rate 1 (``optax.sgd(1.0)``,
``optax.adam(1.0)``, ...). Its ``update(updates, state, params, *, value_fn, **extra_args)``
takes the incoming updates as the direction :math:`u`, tunes :math:`\eta` from the objective
``value_fn`` around ``params``, and returns :math:`\eta u`.

``value_fn(params, **kw)`` receives only the keyword arguments its signature names (all of
them when it takes ``**kwargs``); other extra arguments are ignored, as optax's contrib
transformations do, so one ``update`` call can feed several transformations.

The states are NamedTuples whose ``learning_rate`` field is the step taken, so
``optax.tree.get(opt_state, "learning_rate")`` reads it from any chain. A non-finite value,
slope, curvature or direction gives learning rate 0 and an exactly zero update (selected with
``where``, never by multiplying), recorded in the state; params never become NaN through a
tuner. Numeric hyperparameters are traced, so ``optax.inject_hyperparams`` can change them at
run time without recompiling.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core import _tree
from cdat_core.curvature import directional_curvature
from cdat_core.linesearch import backtracking_linesearch, initial_learning_rate
from cdat_core.rules import (
    cdat_learning_rate,
    ema,
    hypergradient_learning_rate,
    polyak_learning_rate,
    sharpness_learning_rate,
)
from cdat_core.sharpness import hessian_sharpness

__all__ = [
    "ScaleByCdatState",
    "ScaleByHypergradientState",
    "ScaleByLinesearchState",
    "ScaleByPolyakState",
    "ScaleBySharpnessState",
    "cdat",
    "scale_by_cdat",
    "scale_by_hypergradient",
    "scale_by_linesearch",
    "scale_by_polyak",
    "scale_by_sharpness",
]

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


class ScaleByCdatState(NamedTuple):
    r"""State of :func:`scale_by_cdat`.

    Attributes:
      learning_rate: the learning rate :math:`\eta_t` of the last update (0 before any).
      numerator: :math:`\tilde n`, the EMA of :math:`n_t = \max(-\nabla f(w_t)^\top u_t, 0)`.
      denominator: :math:`\tilde d`, the EMA of :math:`d_t = |u_t^\top \nabla^2 f(w_t) u_t| +
        \varepsilon`.
      value: :math:`f(w_t)` at the last update.
      slope: :math:`\nabla f(w_t)^\top u_t` at the last update.
      curvature: :math:`u_t^\top \nabla^2 f(w_t) u_t` at the last update.
      finite: whether the last update's value, slope, curvature and direction were finite
        (when not, the update was zero and the averages were left unchanged).
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    numerator: jax.Array
    denominator: jax.Array
    value: jax.Array
    slope: jax.Array
    curvature: jax.Array
    finite: jax.Array
    num_updates: jax.Array


def scale_by_cdat(
    sigma: float | jax.Array = 2.0,
    *,
    ema_decay: float | jax.Array = 0.0,
    eps: float | jax.Array = 0.0,
    max_learning_rate: float | jax.Array = float("inf"),
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the direction by the CDAT learning rate, eq (8) of Roulet et al. (2024).

    At step :math:`t`, with direction :math:`u_t` (the incoming updates) and objective
    :math:`f` (``value_fn``) at :math:`w_t` (``params``):

    .. math::

        n_t = \max(-\nabla f(w_t)^\top u_t, 0), \qquad
        d_t = |u_t^\top \nabla^2 f(w_t) u_t| + \varepsilon,

        \tilde n_{t+1} = (1 - \beta) n_t + \beta \tilde n_t, \qquad
        \tilde d_{t+1} = (1 - \beta) d_t + \beta \tilde d_t, \qquad
        \eta_t = \sigma \, \tilde n_{t+1} / \tilde d_{t+1},

    and the update is :math:`\eta_t u_t`. Value, slope and curvature come from one
    forward-over-forward pass (:func:`cdat_core.directional_curvature`).

    *EMA initialisation.* :math:`\tilde n_0 = \tilde d_0 = 0`. Both averages then carry the
    same bias factor :math:`1 - \beta^{t+1}`, which cancels in the ratio: the first step is
    exactly the un-averaged rule :math:`\sigma n_0/d_0`, and every step is the ratio of the
    bias-corrected averages. :math:`\beta = 0` (the default) is the plain rule (8).

    Args:
      sigma: :math:`\sigma`; 1 is the greedy rule (eq 3), 2 the on-edge rule (eq 7).
      ema_decay: :math:`\beta = \beta_{cdat} \in [0, 1)`; the paper uses 0.9 or 0.99 with
        Adam and in mini-batch.
      eps: :math:`\varepsilon \ge 0` (the paper uses 0).
      max_learning_rate: upper bound on :math:`\eta_t`; also the step taken when the
        curvature vanishes (with ``inf``, no step is taken then).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`ScaleByCdatState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> A = jnp.diag(jnp.array([4.0, 1.0]))
      >>> loss = lambda w: 0.5 * w @ A @ w
      >>> opt = optax.chain(optax.sgd(1.0), cc.scale_by_cdat(sigma=1.0))
      >>> w = jnp.array([1.0, 1.0]); state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      >>> print(f"{float(optax.tree.get(state, 'learning_rate')):.4f}")  # gᵀg / gᵀAg = 17/65
      0.2615
    """

    def init_fn(params: PyTree) -> ScaleByCdatState:
        dtype = _scalar_dtype(params)
        zero = jnp.zeros((), dtype)
        return ScaleByCdatState(
            learning_rate=zero,
            numerator=zero,
            denominator=zero,
            value=zero,
            slope=zero,
            curvature=zero,
            finite=jnp.asarray(True),
            num_updates=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByCdatState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByCdatState]:
        _check_params(params, updates, "scale_by_cdat")
        fun = _objective(value_fn, extra_args, "scale_by_cdat")
        dtype = state.numerator.dtype
        value, slope, curvature = (
            jnp.asarray(x).astype(dtype) for x in directional_curvature(fun, params, updates)
        )
        finite = (
            jnp.isfinite(value)
            & jnp.isfinite(slope)
            & jnp.isfinite(curvature)
            & _tree.all_finite(updates)
        )
        beta, eps_ = (jnp.asarray(x).astype(dtype) for x in (ema_decay, eps))
        numerator = jnp.maximum(-jnp.where(finite, slope, 0.0), 0.0)
        denominator = jnp.abs(jnp.where(finite, curvature, 0.0)) + jnp.maximum(eps_, 0.0)
        new_numerator = jnp.where(finite, ema(state.numerator, numerator, beta), state.numerator)
        new_denominator = jnp.where(
            finite, ema(state.denominator, denominator, beta), state.denominator
        )
        # eq (8) on the averages: n ≥ 0 and d ≥ 0, so slope = -ñ and curvature = d̃ are exact.
        learning_rate = cdat_learning_rate(
            -new_numerator, new_denominator, sigma=sigma, max_learning_rate=max_learning_rate
        ).astype(dtype)
        learning_rate = jnp.where(finite, learning_rate, 0.0)
        new_state = ScaleByCdatState(
            learning_rate=learning_rate,
            numerator=new_numerator,
            denominator=new_denominator,
            value=value,
            slope=slope,
            curvature=curvature,
            finite=finite,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(learning_rate, updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def cdat(
    direction: optax.GradientTransformation,
    sigma: float | jax.Array = 2.0,
    **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""CDAT on top of a base optimizer: ``optax.chain(direction, scale_by_cdat(sigma, **kw))``.

    Args:
      direction: the base optimizer at learning rate 1, whose updates are the direction
        :math:`u` (``optax.sgd(1.0)`` gives :math:`u = -\nabla f(w)`, ``optax.adam(1.0)``
        Adam's preconditioned momentum direction).
      sigma: :math:`\sigma` of eq (8).
      **kwargs: ``ema_decay``, ``eps``, ``max_learning_rate`` of :func:`scale_by_cdat`.

    Returns:
      The chained :class:`optax.GradientTransformationExtraArgs`; its state is a tuple whose
      second element is a :class:`ScaleByCdatState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: jnp.sum((w - 1.0) ** 4) + jnp.sum(w ** 2)
      >>> opt = cc.cdat(optax.sgd(1.0), sigma=2.0)
      >>> w = jnp.zeros(3); state = opt.init(w)
      >>> for _ in range(50):
      ...     updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      ...     w = optax.apply_updates(w, updates)
      >>> bool(loss(w) < loss(jnp.zeros(3)))
      True
    """
    return optax.chain(direction, scale_by_cdat(sigma, **kwargs))


class ScaleByHypergradientState(NamedTuple):
    r"""State of :func:`scale_by_hypergradient`.

    Attributes:
      learning_rate: the learning rate :math:`\eta_t` of the last update (the initial one
        before any).
      direction: :math:`u_{t-1}`, the previous direction (zeros before any update).
      finite: whether the last update's direction and learning rate were finite (when not,
        the update was zero, ``learning_rate`` records 0 and the next step restarts from
        ``initial_learning_rate``).
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    direction: PyTree
    finite: jax.Array
    num_updates: jax.Array


def scale_by_hypergradient(
    beta: float | jax.Array,
    *,
    initial_learning_rate: float | jax.Array = 1e-2,
) -> optax.GradientTransformationExtraArgs:
    r"""Hyper-gradient descent on the learning rate, eq (15) of Roulet et al. (2024).

    .. math::

        \eta_{t} = \eta_{t-1}\left(1 - \beta\,
            \frac{\nabla f(w_t)^\top u_{t-1}}{\|\nabla f(w_t)\|\,\|u_{t-1}\|}\right),

    where :math:`w_t = w_{t-1} + \eta_{t-1} u_{t-1}`, so :math:`\nabla f(w_t)` is the
    "next gradient" :math:`\nabla f(w_{t-1} + \eta_{t-1} u_{t-1})` of eq (15), and the update
    is :math:`\eta_t u_t`. The first step uses :math:`\eta_0` = ``initial_learning_rate``.
    The gradient :math:`\nabla f(w_t)` is taken from the extra argument ``grad`` when the
    caller passes it (free: the loop has it), else computed from ``value_fn``. Defined
    values follow :func:`cdat_core.hypergradient_learning_rate`; a non-finite direction gives
    a zero update, recorded as learning rate 0, and the next step restarts from
    :math:`\eta_0` (a multiplicative rule would otherwise stay at 0 for ever).

    Args:
      beta: the hyper learning rate :math:`\beta` (the paper's grid: 1e-3 to 1).
      initial_learning_rate: :math:`\eta_0`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByHypergradientState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: 0.5 * jnp.sum(w ** 2)
      >>> tuner = cc.scale_by_hypergradient(0.1, initial_learning_rate=0.1)
      >>> opt = optax.chain(optax.sgd(1.0), tuner)
      >>> w = jnp.ones(2); state = opt.init(w)
      >>> for _ in range(3):
      ...     g = jax.grad(loss)(w)
      ...     updates, state = opt.update(g, state, w, value_fn=loss, grad=g)
      ...     w = optax.apply_updates(w, updates)
      >>> bool(state[1].learning_rate > 0.1)  # the gradient kept pointing the same way
      True
    """

    def init_fn(params: PyTree) -> ScaleByHypergradientState:
        dtype = _scalar_dtype(params)
        return ScaleByHypergradientState(
            learning_rate=jnp.asarray(initial_learning_rate).astype(dtype),
            direction=_tree.zeros_like(params),
            finite=jnp.asarray(True),
            num_updates=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByHypergradientState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        grad: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByHypergradientState]:
        _check_params(params, updates, "scale_by_hypergradient")
        if grad is None:
            grad = jax.grad(_objective(value_fn, extra_args, "scale_by_hypergradient"))(params)
        grad = _tree.match_dtypes(params, grad, "grad")
        dtype = state.learning_rate.dtype
        initial = jnp.asarray(initial_learning_rate).astype(dtype)
        adapted = hypergradient_learning_rate(
            state.learning_rate, grad, state.direction, beta=beta
        ).astype(dtype)
        # First step, or the last step was dropped (learning rate 0): start from η₀.
        restart = (state.num_updates == 0) | (state.learning_rate <= 0)
        learning_rate = jnp.where(restart, initial, adapted)
        finite = _tree.all_finite(updates) & jnp.isfinite(learning_rate)
        new_state = ScaleByHypergradientState(
            learning_rate=jnp.where(finite, learning_rate, 0.0),
            direction=_tree.where(finite, updates, state.direction),
            finite=finite,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(learning_rate, updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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


class ScaleByLinesearchState(NamedTuple):
    r"""State of :func:`scale_by_linesearch`.

    Attributes:
      learning_rate: the learning rate accepted at the last update (0 when the search
        failed: the update was zero and the next search restarts from the maximum).
      value: :math:`f(w_t)` at the last update.
      slope: :math:`\nabla f(w_t)^\top u_t` at the last update.
      num_steps: evaluations of the objective made by the last search.
      accepted: whether the last search accepted a step.
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    value: jax.Array
    slope: jax.Array
    num_steps: jax.Array
    accepted: jax.Array
    num_updates: jax.Array


def scale_by_linesearch(
    *,
    c: float | jax.Array = 0.0,
    delta: float | jax.Array = 0.0,
    decrease_factor: float | jax.Array = 0.8,
    increase_factor: float | jax.Array = float("inf"),
    max_learning_rate: float | jax.Array = 1.0,
    max_steps: int = 30,
) -> optax.GradientTransformationExtraArgs:
    r"""Backtracking linesearch along the direction, eq (1) and Appendix C.3 of the paper.

    Each update searches :math:`\eta = c_-^k \eta_{t,0}`, :math:`k < ` ``max_steps``, from
    :math:`\eta_{t,0} = \min\{c_+ \eta_{t-1}, \eta_{\max}\}`, for the first with

    .. math:: f(w + \eta u) \le f(w) + \delta |f(w)| + c\,\eta\,\nabla f(w)^\top u

    (see :func:`cdat_core.backtracking_linesearch`), and returns :math:`\eta u`. A failed
    search (nothing accepted, ascent direction, non-finite value) gives an exactly zero
    update, and the next search restarts from :math:`\eta_{\max}`
    (:func:`cdat_core.initial_learning_rate`). :math:`f(w)` and :math:`\nabla f(w)` are
    taken from the extra arguments ``value`` and ``grad`` when the caller passes them, else
    computed from ``value_fn``.

    Args:
      c: :math:`c`, the sufficient-decrease constant (paper's grid: 0, 1e-4, 0.5).
      delta: :math:`\delta`, the relative decrease allowed (0 or 1e-3, only with c = 0).
      decrease_factor: :math:`c_-` (0.8 or 0.9).
      increase_factor: :math:`c_+` (4 or ``inf``).
      max_learning_rate: :math:`\eta_{\max}` (1 in the paper).
      max_steps: the number of trials per search (structural).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByLinesearchState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: jnp.sum(w ** 2)
      >>> opt = optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(c=0.5, decrease_factor=0.5))
      >>> w = jnp.ones(2); state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      >>> float(optax.tree.get(state, "learning_rate")), w + updates
      (0.5, Array([0., 0.], dtype=float32))
    """

    def init_fn(params: PyTree) -> ScaleByLinesearchState:
        dtype = _scalar_dtype(params)
        return ScaleByLinesearchState(
            learning_rate=jnp.zeros((), dtype),  # 0: the first search starts from the max
            value=jnp.zeros((), dtype),
            slope=jnp.zeros((), dtype),
            num_steps=jnp.zeros((), jnp.int32),
            accepted=jnp.asarray(True),
            num_updates=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByLinesearchState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        value: Any = None,
        grad: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByLinesearchState]:
        _check_params(params, updates, "scale_by_linesearch")
        fun, value, grad = _value_and_grad(
            value_fn, extra_args, params, value, grad, "scale_by_linesearch"
        )
        dtype = state.learning_rate.dtype
        slope = _tree.vdot(grad, updates).astype(dtype)
        guess = initial_learning_rate(
            state.learning_rate,
            increase_factor=increase_factor,
            max_learning_rate=max_learning_rate,
        )
        result = backtracking_linesearch(
            fun,
            params,
            updates,
            value=value,
            slope=slope,
            initial_learning_rate=guess,
            c=c,
            delta=delta,
            decrease_factor=decrease_factor,
            max_steps=max_steps,
        )
        learning_rate = result.learning_rate.astype(dtype)
        take = result.accepted & _tree.all_finite(updates)
        learning_rate = jnp.where(take, learning_rate, 0.0)
        new_state = ScaleByLinesearchState(
            learning_rate=learning_rate,
            value=value.astype(dtype),
            slope=slope,
            num_steps=result.num_steps,
            accepted=result.accepted,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(learning_rate, updates, take), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByPolyakState(NamedTuple):
    r"""State of :func:`scale_by_polyak`.

    Attributes:
      learning_rate: the learning rate of the last update.
      value: :math:`f(w_t)` at the last update.
      grad_sq_norm: :math:`\|\nabla f(w_t)\|^2` at the last update.
      finite: whether the last update's inputs were finite.
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad_sq_norm: jax.Array
    finite: jax.Array
    num_updates: jax.Array


def scale_by_polyak(
    *,
    f_star: float | jax.Array = 0.0,
    max_learning_rate: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the direction by the Polyak step size, eq (14) of the paper.

    .. math::

        \eta_t = \min\left\{\frac{\max(f(w_t) - f^\star, 0)}{\|\nabla f(w_t)\|^2
        + \varepsilon}, \eta_{\max}\right\},

    (:func:`cdat_core.polyak_learning_rate`) and the update is :math:`\eta_t u_t`. With
    ``optax.sgd(1.0)`` before it this is ``optax.polyak_sgd``. :math:`f(w)` and
    :math:`\nabla f(w)` are taken from the extra arguments ``value`` and ``grad`` when given,
    else computed from ``value_fn``.

    Args:
      f_star: :math:`f^\star`, a lower bound on the objective (0 in the paper).
      max_learning_rate: :math:`\eta_{\max}` (1 or 100 in the paper).
      eps: :math:`\varepsilon \ge 0`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`ScaleByPolyakState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: jnp.sum(w ** 2)
      >>> opt = optax.chain(optax.sgd(1.0), cc.scale_by_polyak())
      >>> w = jnp.ones(2); state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      >>> float(optax.tree.get(state, "learning_rate"))  # f / ‖g‖² = 2 / 8
      0.25
    """

    def init_fn(params: PyTree) -> ScaleByPolyakState:
        dtype = _scalar_dtype(params)
        zero = jnp.zeros((), dtype)
        return ScaleByPolyakState(zero, zero, zero, jnp.asarray(True), jnp.zeros((), jnp.int32))

    def update_fn(
        updates: PyTree,
        state: ScaleByPolyakState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        value: Any = None,
        grad: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByPolyakState]:
        _check_params(params, updates, "scale_by_polyak")
        _, value, grad = _value_and_grad(
            value_fn, extra_args, params, value, grad, "scale_by_polyak"
        )
        dtype = state.learning_rate.dtype
        value = value.astype(dtype)
        grad_sq_norm = _tree.sq_norm(grad).astype(dtype)
        learning_rate = polyak_learning_rate(
            value, grad_sq_norm, f_star=f_star, max_learning_rate=max_learning_rate, eps=eps
        ).astype(dtype)
        finite = jnp.isfinite(value) & jnp.isfinite(grad_sq_norm) & _tree.all_finite(updates)
        learning_rate = jnp.where(finite, learning_rate, 0.0)
        new_state = ScaleByPolyakState(
            learning_rate, value, grad_sq_norm, finite, optax.safe_increment(state.num_updates)
        )
        return _scaled(learning_rate, updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleBySharpnessState(NamedTuple):
    r"""State of :func:`scale_by_sharpness`.

    Attributes:
      learning_rate: the learning rate of the last update.
      sharpness: :math:`\lambda_{\max}` estimated at the last update.
      eigenvector: the estimated top eigenvector (like params, sharded like them), the warm
        start of the next estimate.
      converged: whether the last eigensolve met its tolerance.
      finite: whether the last update's sharpness and direction were finite.
      num_updates: number of updates made.
    """

    learning_rate: jax.Array
    sharpness: jax.Array
    eigenvector: PyTree
    converged: jax.Array
    finite: jax.Array
    num_updates: jax.Array


def scale_by_sharpness(
    sigma: float | jax.Array = 2.0,
    *,
    max_learning_rate: float | jax.Array = float("inf"),
    method: str = "lanczos",
    num_iters: int = 20,
    key: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the direction by the exact-sharpness rule, eq (16) of the paper.

    .. math:: \eta_t = \sigma / \lambda_{\max}(\nabla^2 f(w_t)),

    with :math:`\lambda_{\max}` from :func:`cdat_core.hessian_sharpness` on ``value_fn``,
    warm-started from the previous eigenvector (the first start is drawn from ``key``), so
    tracking it costs ``num_iters`` Hessian-vector products per update. The paper (Fig. 15)
    finds the rule works only for :math:`\sigma \approx 3`, unlike CDAT at
    :math:`\sigma \approx 2`. Defined values follow
    :func:`cdat_core.sharpness_learning_rate`.

    Args:
      sigma: :math:`\sigma`.
      max_learning_rate: upper bound on :math:`\eta_t`.
      method: ``"lanczos"`` or ``"power"`` (structural).
      num_iters: Hessian-vector products per update at most (structural).
      key: PRNG key of the first start vector (default ``jax.random.key(0)``).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleBySharpnessState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> loss = lambda w: 0.5 * (4.0 * w[0] ** 2 + w[1] ** 2)
      >>> opt = optax.chain(optax.sgd(1.0), cc.scale_by_sharpness(sigma=1.0))
      >>> w = jnp.ones(2); state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      >>> round(float(optax.tree.get(state, "learning_rate")), 4)  # 1 / λ_max = 1/4
      0.25
    """

    def init_fn(params: PyTree) -> ScaleBySharpnessState:
        dtype = _scalar_dtype(params)
        start_key = jax.random.key(0) if key is None else key
        start = _tree.normal_like(start_key, params)  # placed like the params, even when sharded
        zero = jnp.zeros((), dtype)
        return ScaleBySharpnessState(
            learning_rate=zero,
            sharpness=zero,
            eigenvector=start,
            converged=jnp.asarray(False),
            finite=jnp.asarray(True),
            num_updates=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleBySharpnessState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleBySharpnessState]:
        _check_params(params, updates, "scale_by_sharpness")
        fun = _objective(value_fn, extra_args, "scale_by_sharpness")
        dtype = state.learning_rate.dtype
        result = hessian_sharpness(
            fun, params, v0=state.eigenvector, method=method, num_iters=num_iters
        )
        sharpness = result.eigenvalues[0].astype(dtype)
        finite = jnp.isfinite(sharpness) & _tree.all_finite(updates)
        learning_rate = sharpness_learning_rate(
            sharpness, sigma=sigma, max_learning_rate=max_learning_rate
        ).astype(dtype)
        learning_rate = jnp.where(finite, learning_rate, 0.0)
        eigenvector = jax.tree.map(
            lambda new, old: jnp.where(finite, new[0].astype(old.dtype), old),
            result.eigenvectors,
            state.eigenvector,
        )
        new_state = ScaleBySharpnessState(
            learning_rate=learning_rate,
            sharpness=sharpness,
            eigenvector=eigenvector,
            converged=result.converged,
            finite=finite,
            num_updates=optax.safe_increment(state.num_updates),
        )
        return _scaled(learning_rate, updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
