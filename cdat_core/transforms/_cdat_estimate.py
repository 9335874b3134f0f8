r"""How CDAT's value, slope and curvature are computed at one update: refreshed or reused.

The private half of :mod:`cdat_core.transforms.cdat_curvature` (which documents the
estimators): :func:`objective` (``value_fn``'s, or ``loss(predict(params))`` for
Gauss-Newton), :func:`estimate` (the ``lax.cond`` between a refresh by the estimator and the
reuse of the last Rayleigh quotient, the parabola, the lagged parabola and the forward-edge
search), and :func:`bookkeeping` (the state fields that carry the quotient between refreshes).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cdat_core import _tree
from cdat_core.curvature import directional_curvature, gauss_newton_curvature
from cdat_core.transforms._common import (
    PyTree,
    _check_scalar_value,
    _objective,
    _value_fn_kwargs,
)
from cdat_core.transforms.cdat_curvature import (
    Estimator,
    ExactCurvature,
    ForwardEdgeCurvature,
    GaussNewtonCurvature,
    ParabolicCurvature,
)


def objective(
    estimator: Estimator,
    value_fn: Callable[..., Any] | None,
    extra_args: dict[str, Any],
    name: str,
    has_aux: bool,
) -> Callable[[PyTree], Any]:
    """``params -> loss``: ``value_fn``'s, or ``loss(predict(params))`` for Gauss-Newton."""
    if not isinstance(estimator, GaussNewtonCurvature):
        return _objective(value_fn, extra_args, name, has_aux)
    predict, loss = _gauss_newton_parts(estimator, extra_args)
    return lambda p: _tree.scalar_output(loss, "loss")(predict(p))


def _gauss_newton_parts(
    estimator: GaussNewtonCurvature, extra_args: dict[str, Any]
) -> tuple[Callable[[PyTree], Any], Callable[[Any], Any]]:
    kw_predict = _value_fn_kwargs(estimator.predict, extra_args)
    kw_loss = _value_fn_kwargs(estimator.loss, extra_args)
    return (
        lambda p: estimator.predict(p, **kw_predict),
        lambda out: estimator.loss(out, **kw_loss),
    )


class Estimate(NamedTuple):
    """What one update's estimator gives: value, slope, curvature and its bookkeeping."""

    value: jax.Array
    slope: jax.Array
    curvature: jax.Array
    quotient: jax.Array  # curvature / |u|^2 (the Rayleigh quotient reused between refreshes)
    direction_sq_norm: jax.Array
    refreshed: jax.Array
    num_probes: jax.Array


def estimate(
    estimator: Estimator,
    every: Any,
    fun: Callable[[PyTree], Any],
    params: PyTree,
    updates: PyTree,
    state: Any,
    extra_args: dict[str, Any],
    early: bool = False,
) -> Estimate:
    """Value, slope and curvature at this update, refreshed or reused as ``every`` says.

    With ``early``, a reuse becomes a refresh when the lagged parabola of the last update
    shows more curvature than the quotient about to be reused (:func:`_rose`).
    """
    dtype = state.numerator.dtype
    usq = _tree.sq_norm(updates).astype(dtype)
    no_probe = jnp.zeros((), jnp.int32)

    def cast(*xs: Any) -> tuple[jax.Array, ...]:
        return tuple(jnp.asarray(x).astype(dtype) for x in xs)

    refresh = _refresh_due(state, every)
    if isinstance(estimator, ExactCurvature) and refresh is True:  # today's rule, bit for bit
        v, s, d = cast(*directional_curvature(fun, params, updates))
        return Estimate(v, s, d, _quotient(d, usq), usq, jnp.asarray(True), no_probe)

    given = _given_value_and_slope(extra_args, params, updates, dtype)
    needs_value = not isinstance(estimator, ExactCurvature | GaussNewtonCurvature)
    if given is None and (needs_value or (early and refresh is not True)):
        v0, s0 = cast(*jax.jvp(fun, (params,), (updates,)))
        given = (v0, s0)

    if early and refresh is not True:
        assert given is not None
        refresh = _rose(given[0], state) if refresh is False else refresh | _rose(given[0], state)

    def reuse() -> tuple[jax.Array, ...]:
        v, s = given if given is not None else cast(*jax.jvp(fun, (params,), (updates,)))
        return v, s, state.quotient * usq, no_probe

    def refreshed() -> tuple[jax.Array, ...]:
        if isinstance(estimator, ExactCurvature):
            return (*cast(*directional_curvature(fun, params, updates)), no_probe)
        if isinstance(estimator, GaussNewtonCurvature):
            predict, loss = _gauss_newton_parts(estimator, extra_args)
            return (*cast(*gauss_newton_curvature(predict, loss, params, updates)), no_probe)
        assert given is not None
        v, s = given
        h = _probe_step(state.learning_rate, usq, estimator.initial_step)
        if isinstance(estimator, ParabolicCurvature):
            return v, s, _parabola(fun, params, updates, v, s, h), jnp.ones((), jnp.int32)
        if isinstance(estimator, ForwardEdgeCurvature):
            edge, probes = _forward_edge(estimator, fun, params, updates, v, s, h)
            n = jnp.maximum(-s, 0.0)
            ok = (n > 0) & (edge > 0) & jnp.isfinite(edge)
            d = jnp.where(ok, 2.0 * n / jnp.where(ok, edge, 1.0), state.quotient * usq)
            return v, s, d, probes

        def lagged() -> tuple[jax.Array, jax.Array]:
            return _lagged_quotient(v, state) * usq, no_probe

        def probe() -> tuple[jax.Array, jax.Array]:
            return _parabola(fun, params, updates, v, s, h), jnp.ones((), jnp.int32)

        available = _lag_available(state)
        if available is True:
            return v, s, *lagged()
        return v, s, *jax.lax.cond(available, lagged, probe)

    if refresh is True:
        v, s, d, probes = refreshed()
    elif refresh is False:
        v, s, d, probes = reuse()
    else:
        v, s, d, probes = jax.lax.cond(refresh, refreshed, reuse)
    took = jnp.asarray(refresh)
    quotient = jnp.where(took, _quotient(d, usq), state.quotient)
    return Estimate(v, s, d, quotient, usq, took, probes)


def bookkeeping(
    est: Estimate, finite: jax.Array, state: Any, every: Any
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """New ``(quotient, direction_sq_norm, since_refresh, num_refreshes)`` of the state.

    A refresh counts only when its step was finite; otherwise the quotient is kept and the
    next update refreshes again.
    """
    counted = finite & est.refreshed
    quotient = jnp.where(counted, est.quotient, state.quotient)
    usq = jnp.where(finite, est.direction_sq_norm, 0.0).astype(state.direction_sq_norm.dtype)
    cap = jnp.maximum(jnp.asarray(every).astype(jnp.int32), 1)
    since = jnp.where(counted, 1, jnp.minimum(state.since_refresh + 1, cap)).astype(jnp.int32)
    refreshes = state.num_refreshes + counted.astype(jnp.int32)
    return quotient, usq, since, refreshes


# --------------------------------------------------------------------------------------------
# Pieces (module-level so that the benchmarks can fix a predicate and count one branch alone)
# --------------------------------------------------------------------------------------------


def _refresh_due(state: Any, every: Any) -> Any:
    """``True`` (Python) when every update refreshes, else the traced predicate."""
    if not isinstance(every, jax.core.Tracer) and operator.index(every) == 1:
        return True
    every = jnp.maximum(jnp.asarray(every).astype(jnp.int32), 1)
    return (state.num_refreshes == 0) | (state.since_refresh >= every)


def _lag_available(state: Any) -> Any:
    """Whether the previous update took a finite step the lagged parabola can use."""
    eta, usq = state.learning_rate, state.direction_sq_norm
    known = jnp.isfinite(state.value) & jnp.isfinite(state.slope)
    return state.finite & known & jnp.isfinite(eta) & (eta > 0) & (usq > 0)


def _rose(value: jax.Array, state: Any) -> jax.Array:
    """Whether the last update's lagged quotient exceeds the quotient in use (stale curvature)."""
    return _lag_available(state) & (_lagged_quotient(value, state) > state.quotient)


def _quotient(d: jax.Array, usq: jax.Array) -> jax.Array:
    ok = (usq > 0) & jnp.isfinite(usq)
    return jnp.where(ok, d / jnp.where(ok, usq, 1.0), 0.0)


def _given_value_and_slope(
    extra_args: dict[str, Any], params: PyTree, updates: PyTree, dtype: Any
) -> tuple[jax.Array, jax.Array] | None:
    r""":math:`f(w)` and :math:`\nabla f(w)^\top u` from ``value=`` and ``grad=``, if both given."""
    value, grad = extra_args.get("value"), extra_args.get("grad")
    if value is None or grad is None:
        return None
    grad = _tree.match_dtypes(params, grad, "grad")
    return _check_scalar_value(value).astype(dtype), _tree.vdot(grad, updates).astype(dtype)


def _probe_step(previous: jax.Array, usq: jax.Array, initial_step: float) -> jax.Array:
    r""":math:`\eta_{t-1}` when positive and finite, else :math:`\mu / \lVert u\rVert`."""
    ok = jnp.isfinite(previous) & (previous > 0)
    norm = jnp.sqrt(jnp.where((usq > 0) & jnp.isfinite(usq), usq, 1.0))
    fallback = jnp.asarray(initial_step, previous.dtype) / norm
    fallback = jnp.where(jnp.isfinite(fallback) & (fallback > 0), fallback, 1.0)
    return jnp.where(ok, previous, fallback)


def _phi(fun: Callable[[PyTree], Any], params: PyTree, updates: PyTree, t: jax.Array) -> Any:
    return jnp.asarray(fun(_tree.axpy(t, updates, params))).astype(t.dtype)


def _parabola(
    fun: Callable[[PyTree], Any],
    params: PyTree,
    updates: PyTree,
    value: jax.Array,
    slope: jax.Array,
    h: jax.Array,
) -> jax.Array:
    r""":math:`2((\phi(h) - \phi(0))/h - s)/h`, the parabola's curvature (h > 0)."""
    return 2.0 * ((_phi(fun, params, updates, h) - value) / h - slope) / h


def _lagged_quotient(value: jax.Array, state: Any) -> jax.Array:
    r""":math:`d_{t-1} / \lVert u_{t-1}\rVert^2` from the previous update and :math:`f(w_t)`."""
    ok = _lag_available(state)
    eta = jnp.where(ok, state.learning_rate, 1.0)
    usq = jnp.where(ok, state.direction_sq_norm, 1.0)
    d = 2.0 * ((value - jnp.where(ok, state.value, 0.0)) / eta - jnp.where(ok, state.slope, 0.0))
    return jnp.where(ok, d / eta / usq, 0.0)


class _Search(NamedTuple):
    k: jax.Array  # probes made
    lo: jax.Array  # largest probe with phi(lo) <= phi(0) (0 at first)
    r_lo: jax.Array  # r(lo) (the slope s at lo = 0)
    hi: jax.Array  # smallest probe above phi(0) or non-finite (inf at first)
    r_hi: jax.Array  # r(hi) when finite
    hi_ok: jax.Array  # phi(hi) was finite
    scale_lo: jax.Array  # Illinois weights of r_lo and r_hi in the next secant
    scale_hi: jax.Array
    side: jax.Array  # which end the last probe replaced: -1 lo, +1 hi, 0 none yet
    t: jax.Array  # next probe
    done: jax.Array


def _forward_edge(
    spec: ForwardEdgeCurvature,
    fun: Callable[[PyTree], Any],
    params: PyTree,
    updates: PyTree,
    value: jax.Array,
    slope: jax.Array,
    t0: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(edge, probes): the secant search of :class:`ForwardEdgeCurvature` in a bounded loop."""
    n = jnp.maximum(-slope, 0.0)
    tol = jnp.asarray(spec.rtol, value.dtype)
    search = jnp.isfinite(value) & jnp.isfinite(slope) & (n > 0)

    def cond(c: _Search) -> jax.Array:
        return search & (c.k < spec.max_evaluations) & ~c.done

    def body(c: _Search) -> _Search:
        f_t = _phi(fun, params, updates, c.t)
        ok = jnp.isfinite(f_t)
        r = jnp.where(ok, (jnp.where(ok, f_t, value) - value) / c.t, 0.0)
        below = ok & (r <= 0)
        lo, r_lo = jnp.where(below, c.t, c.lo), jnp.where(below, r, c.r_lo)
        hi, r_hi = jnp.where(below, c.hi, c.t), jnp.where(below, c.r_hi, r)
        hi_ok = jnp.where(below, c.hi_ok, ok)
        # Illinois (Dowell and Jarratt, 1971): an end kept twice in a row has its r halved,
        # so regula falsi does not creep towards the root from one side only.
        side = jnp.where(below, -1, 1).astype(jnp.int32)
        again = side == c.side
        scale_lo = jnp.where(below, 1.0, jnp.where(again, 0.5 * c.scale_lo, c.scale_lo))
        scale_hi = jnp.where(below, jnp.where(again, 0.5 * c.scale_hi, c.scale_hi), 1.0)
        t = _next_probe(lo, scale_lo * r_lo, hi, scale_hi * r_hi, hi_ok, slope)
        narrow = jnp.isfinite(hi) & (hi - lo <= tol * hi)
        converged = ok & ((jnp.abs(r) <= tol * n) | (jnp.abs(t - c.t) <= tol * c.t))
        done = converged | narrow
        return _Search(c.k + 1, lo, r_lo, hi, r_hi, hi_ok, scale_lo, scale_hi, side, t, done)

    zero, one, inf = jnp.zeros_like(value), jnp.ones_like(value), jnp.full_like(value, jnp.inf)
    no = jnp.asarray(False)
    none = jnp.zeros((), jnp.int32)
    start = _Search(none, zero, slope, inf, zero, no, one, one, none, t0, no)
    c = jax.lax.while_loop(cond, body, start)
    bracketed = jnp.isfinite(c.hi)
    secant = jnp.clip(_secant(c.lo, c.r_lo, c.hi, c.r_hi), c.lo, jnp.where(bracketed, c.hi, c.lo))
    edge = jnp.where(
        bracketed,
        jnp.where(c.hi_ok, secant, jnp.where(c.lo > 0, c.lo, 0.5 * c.hi)),
        _extrapolated(c.lo, c.r_lo, slope, least=1.0, most=None, fallback=1.0),
    )
    return edge, c.k


def _secant(lo: jax.Array, r_lo: jax.Array, hi: jax.Array, r_hi: jax.Array) -> jax.Array:
    """Root of the line through :math:`(lo, r_{lo})` and :math:`(hi, r_{hi})`; ``lo`` if flat."""
    ok = jnp.isfinite(hi) & (r_hi > r_lo)
    width = jnp.where(ok, hi - lo, 0.0)
    return lo - r_lo * width / jnp.where(ok, r_hi - r_lo, 1.0)


def _extrapolated(
    lo: jax.Array,
    r_lo: jax.Array,
    slope: jax.Array,
    *,
    least: float,
    most: float | None,
    fallback: float,
) -> jax.Array:
    r"""Root of the line through :math:`(0, s)` and :math:`(lo, r_{lo})`, clipped.

    The range is ``[least * lo, most * lo]`` (no upper bound when ``most`` is None);
    ``fallback * lo`` when the line does not rise (no curvature seen).
    """
    rising = (r_lo > slope) & (lo > 0)
    root = -slope * lo / jnp.where(rising, r_lo - slope, 1.0)
    root = jnp.maximum(root, least * lo)
    if most is not None:
        root = jnp.minimum(root, most * lo)
    return jnp.where(rising, root, fallback * lo)


def _next_probe(
    lo: jax.Array,
    r_lo: jax.Array,
    hi: jax.Array,
    r_hi: jax.Array,
    hi_ok: jax.Array,
    slope: jax.Array,
) -> jax.Array:
    """Expand, regula falsi with a bisection safeguard, or shrink from a non-finite top.

    ``r_lo`` and ``r_hi`` come weighted by the Illinois factors; the extrapolation (no top
    yet) uses ``r_lo`` as is, since ``lo`` was then just replaced (weight 1).
    """
    bracketed = jnp.isfinite(hi)
    top = jnp.where(bracketed, hi, 2.0 * lo + 1.0)
    middle = lo + 0.5 * (top - lo)
    secant = _secant(lo, r_lo, top, r_hi)
    margin = 0.05 * (top - lo)
    inside = (secant >= lo + margin) & (secant <= top - margin)
    in_bracket = jnp.where(hi_ok & inside, secant, middle)
    shrink = jnp.where(lo > 0, middle, 0.25 * top)
    return jnp.where(
        bracketed,
        jnp.where(hi_ok, in_bracket, shrink),
        _extrapolated(lo, r_lo, slope, least=1.5, most=4.0, fallback=4.0),
    )
