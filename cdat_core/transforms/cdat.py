r"""CDAT: the curvature-dynamics-aware learning rate, eq (8) of Roulet et al. (2024).

:class:`ScaleByCdatState` and :func:`scale_by_cdat` scale the incoming direction by
:math:`\sigma \tilde n / \tilde d` from the slope and curvature along it; :func:`cdat`
chains it after a base optimizer. The opt-in loss check ``max_rise`` (off by default: the paper's
rule exactly) and its bounded backtracking loop, ``_checked_learning_rate``, live here too; the
curvature estimators (``curvature=``, ``every=``) in :mod:`cdat_core.transforms.cdat_curvature`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core import _tree
from cdat_core.rules import cdat_learning_rate, ema
from cdat_core.transforms import _cdat_estimate
from cdat_core.transforms._common import (
    PyTree,
    _all_finite,
    _check_has_aux,
    _check_hyperparameter,
    _check_params,
    _concrete_number,
    _scalar_dtype,
    _scaled,
)
from cdat_core.transforms.cdat_curvature import check_every, resolve_curvature

__all__ = ["ScaleByCdatState", "cdat", "scale_by_cdat"]


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
      finite: whether the last update's value, slope, curvature, direction, params,
        hyperparameters and new averages were all finite (when not, the update was exactly
        zero, ``learning_rate`` records 0 and the averages were left unchanged).
      num_updates: number of updates made.
      proposed_learning_rate: the rule's :math:`\eta^{(0)}_t` before the ``max_rise`` check
        (equal to ``learning_rate`` without it).
      num_backtracks: how many times the check multiplied :math:`\eta` by
        ``backtrack_factor`` at the last update (int32; 0 without the check).
      accepted: whether the check accepted a step at the last update (``True`` without it;
        when ``False``, ``learning_rate`` is 0 and the update was exactly zero).
      quotient: :math:`q = d_r / \lVert u_r\rVert^2` of the last refresh :math:`r` of the
        curvature that gave a finite step (0 before any); reused between refreshes.
      direction_sq_norm: :math:`\lVert u_t\rVert^2` at the last update (0 if not finite).
      since_refresh: updates since that refresh (int32, capped at ``every``).
      num_refreshes: refreshes that gave a finite step (int32).
      num_probes: forward passes of :math:`f` the estimator made at the last update (int32;
        0 for ``"exact"``, Gauss-Newton, the lagged parabola and reused steps).
    """

    learning_rate: jax.Array
    numerator: jax.Array
    denominator: jax.Array
    value: jax.Array
    slope: jax.Array
    curvature: jax.Array
    finite: jax.Array
    num_updates: jax.Array
    proposed_learning_rate: jax.Array
    num_backtracks: jax.Array
    accepted: jax.Array
    quotient: jax.Array
    direction_sq_norm: jax.Array
    since_refresh: jax.Array
    num_refreshes: jax.Array
    num_probes: jax.Array


def scale_by_cdat(
    sigma: float | jax.Array = 2.0,
    *,
    ema_decay: float | jax.Array = 0.0,
    eps: float | jax.Array = 0.0,
    max_learning_rate: float | jax.Array = float("inf"),
    max_rise: float | jax.Array | None = None,
    backtrack_factor: float | jax.Array = 0.5,
    max_backtracks: int = 20,
    has_aux: bool = False,
    curvature: Any = "exact",
    every: int = 1,
    early_refresh: bool = False,
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
    forward-over-forward pass (:func:`cdat_core.directional_curvature`) by default.

    *Cheaper curvature* (``curvature``, ``every``). :math:`d_t` may instead come from the
    parabola through one extra forward pass (``"parabolic"``), from the previous step's
    values (``"lagged"``, no extra pass), from the Gauss-Newton matrix
    (:class:`~cdat_core.GaussNewtonCurvature`) or from the edge of :math:`f` found by forward
    passes (``"forward_edge"``), and be refreshed every ``every`` updates only, the Rayleigh
    quotient of the last refresh being reused in between: equations, references and costs in
    :mod:`cdat_core.transforms.cdat_curvature`. Pass ``value=`` and ``grad=`` (your
    ``jax.value_and_grad`` at ``params``) to ``update`` so that they cost no extra pass.

    *EMA initialisation.* :math:`\tilde n_0 = \tilde d_0 = 0`. Both averages then carry the
    same bias factor :math:`1 - \beta^{t+1}`, which cancels in the ratio: the first step is
    exactly the un-averaged rule :math:`\sigma n_0/d_0`, and every step is the ratio of the
    bias-corrected averages. :math:`\beta = 0` (the default) is the plain rule (8).

    *Bad input.* A non-finite value, slope, curvature, direction or param, or new averages
    that would not be finite, give :math:`\eta_t = 0` and an exactly zero update (selected
    with ``where``), recorded as ``finite=False``; the averages then keep their previous
    values, so one bad step never poisons the next ones.

    *Loss check* (``max_rise`` :math:`=\kappa`, off by default). The quadratic model behind
    eq (8) holds only near :math:`w_t`. With Adam the first direction is
    :math:`-\mathrm{sign}(g)` (every :math:`|u_i| = 1`), and at a small-weight init (the
    PyTorch/equinox default Linear) the curvature along it is far too small, a near-cancelling
    difference, so the rule proposed steps 2-120x past the loss's true edge on a ReLU MLP with
    cross-entropy on digits; the EMA, which starts at the raw rule, then keeps the blow-up for
    tens of steps. With ``max_rise`` set, the rule's :math:`\eta^{(0)}_t` is checked against
    the loss, one extra forward pass per trial: with :math:`c_- =` ``backtrack_factor`` and
    :math:`K =` ``max_backtracks``,

    .. math::

        \eta_t = c_-^k \eta^{(0)}_t, \quad k = \min\{k \le K :
        f(w_t + c_-^k \eta^{(0)}_t u_t) \le f(w_t) + \kappa\, c_-^k \eta^{(0)}_t\, n_t\},

    and :math:`\eta_t = 0` (an exactly zero update, ``accepted=False``) if no such :math:`k`;
    a non-finite trial value fails the test. The loss may rise, as on-edge steps do, but by at
    most :math:`\kappa` times the first-order decrease the step was meant to buy (the paper's
    Armijo test with constant :math:`-\kappa`). The averages are the paper's, updated
    whether or not the step is shrunk. :math:`\kappa = 1` fixed every collapse measured;
    :math:`\kappa = 0` turns CDAT into a line search (the paper's greedy tuners): avoid it.
    ``max_rise=None`` is the paper's rule, bit for bit, with no extra forward pass.

    *Hyperparameters.* Concrete ones (Python numbers, or arrays outside ``jit``) are checked
    here and out-of-range ones raise a ``ValueError`` that names them. Traced ones
    (``optax.inject_hyperparams`` under ``jit``) are sanitised at each step: ``ema_decay`` is
    clipped to :math:`[0, 1]` (1 keeps the averages as they are), a negative ``eps`` counts as
    0, a negative ``sigma`` or ``max_learning_rate`` gives :math:`\eta_t = 0`, and a NaN or
    infinite one (``max_learning_rate`` may be ``+inf``) makes that step a zero update with
    ``finite=False`` and the averages untouched; the next step with a good value proceeds from
    them. The same holds for a NaN or infinite traced ``max_rise`` or NaN ``backtrack_factor``;
    a negative ``max_rise`` counts as 0 and ``backtrack_factor`` is clipped to :math:`[0, 1]`
    (0: the first backtrack gives :math:`\eta_t = 0`; 1: a failing step is never shrunk and
    ends at :math:`\eta_t = 0`).

    Args:
      sigma: :math:`\sigma \ge 0`; 1 is the greedy rule (eq 3), 2 the on-edge rule (eq 7).
      ema_decay: :math:`\beta = \beta_{cdat} \in [0, 1)`; the paper uses 0.9 or 0.99 with
        Adam and in mini-batch.
      eps: :math:`\varepsilon \ge 0` (the paper uses 0).
      max_learning_rate: upper bound on :math:`\eta_t \ge 0` (``inf`` allowed); also the
        step taken when the curvature vanishes (with ``inf``, no step is taken then).
      max_rise: :math:`\kappa \ge 0` (finite) or ``None`` (default: no check, the paper's
        rule). The recipe with Adam: ``cdat(optax.adam(1.0), 2.0, ema_decay=0.9,
        max_rise=1.0)``.
      backtrack_factor: :math:`c_- \in (0, 1)`, the factor of each backtrack.
      max_backtracks: :math:`K`, a Python int >= 0 (structural, bound at trace time; with
        ``optax.inject_hyperparams`` name it in ``static_args``). Unused without ``max_rise``.
      has_aux: a Python bool: whether ``value_fn`` returns ``(loss, aux)``. The tuner uses
        the loss and drops ``aux`` before its JVPs and trials; read ``aux`` from your own
        ``jax.value_and_grad(value_fn, has_aux=True)`` at the same params (see
        :mod:`cdat_core.transforms` for why the state does not keep it).
      curvature: ``"exact"`` (default), ``"parabolic"``, ``"lagged"``, ``"forward_edge"``,
        or an estimator object (:class:`~cdat_core.GaussNewtonCurvature`,
        :class:`~cdat_core.ParabolicCurvature`, ...); structural.
      every: :math:`k \ge 1`, refresh the curvature every :math:`k` updates (a Python int;
        with ``optax.inject_hyperparams`` name it in ``static_args`` to keep ``every=1``
        free of the ``lax.cond``).
      early_refresh: a Python bool: with ``every > 1``, also refresh when the last update's
        loss change shows more curvature than the reused quotient (free; see
        :mod:`cdat_core.transforms.cdat_curvature`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`ScaleByCdatState`.

    Raises:
      ValueError: a concrete hyperparameter out of range, e.g. ``ema_decay=1.0``, an unknown
        ``curvature`` or an ``every`` that is not an int >= 1.
      TypeError: ``max_backtracks`` not a Python int (with ``max_rise`` set), or ``has_aux``
        not a bool; at trace time, a ``value_fn`` that returns a tuple with
        ``has_aux=False``. With ``has_aux=True`` and a ``value_fn`` that does not return a
        pair, a ``ValueError`` at trace time.

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

      The check on a kink the curvature at :math:`w` cannot see:
      :math:`f(w) = w^2/2 + 100\,\mathrm{relu}(-w - 1/2)^2` at :math:`w = 1`, where the
      slope is -1 and the curvature 1. The paper's rule takes :math:`\eta = 2` and the loss
      goes from 0.5 to 25.5; with ``max_rise=1.0``, 25.5 > 0.5 + 2 fails, :math:`\eta = 1`
      passes and the loss goes to 0:

      >>> f = lambda w: jnp.sum(0.5 * w**2 + 100.0 * jnp.maximum(-w - 0.5, 0.0) ** 2)
      >>> w = jnp.array([1.0])
      >>> for kappa in (None, 1.0):
      ...     opt = cc.cdat(optax.sgd(1.0), sigma=2.0, max_rise=kappa)
      ...     updates, state = opt.update(jax.grad(f)(w), opt.init(w), w, value_fn=f)
      ...     s = state[1]
      ...     print(float(s.proposed_learning_rate), float(s.learning_rate),
      ...           int(s.num_backtracks), float(f(w + updates)))
      2.0 2.0 0 25.5
      2.0 1.0 1 0.0
    """
    name = "scale_by_cdat"
    has_aux = _check_has_aux(name, has_aux)
    estimator = resolve_curvature(curvature, name)
    check_every(every, name)
    if not isinstance(early_refresh, bool):
        raise ValueError(f"{name}: early_refresh must be True or False, got {early_refresh!r}.")
    _check_hyperparameter(name, "sigma", sigma)
    _check_hyperparameter(name, "ema_decay", ema_decay, below=1.0)
    _check_hyperparameter(name, "eps", eps)
    _check_hyperparameter(name, "max_learning_rate", max_learning_rate, allow_inf=True)
    if max_rise is not None:
        _check_hyperparameter(name, "max_rise", max_rise)
        _check_hyperparameter(name, "backtrack_factor", backtrack_factor, below=1.0)
        if _concrete_number(backtrack_factor) == 0.0:
            raise ValueError(
                f"{name}: backtrack_factor must be in (0, 1), got {backtrack_factor!r}."
            )
        # inject_hyperparams traces every numeric default: checked only when the loop exists.
        num_backtracks_max = _check_max_backtracks(name, max_backtracks)

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
            proposed_learning_rate=zero,
            num_backtracks=jnp.zeros((), jnp.int32),
            accepted=jnp.asarray(True),
            quotient=zero,
            direction_sq_norm=zero,
            since_refresh=jnp.zeros((), jnp.int32),
            num_refreshes=jnp.zeros((), jnp.int32),
            num_probes=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByCdatState,
        params: PyTree | None = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByCdatState]:
        params, updates = _check_params(params, updates, name)
        fun = _cdat_estimate.objective(estimator, value_fn, extra_args, name, has_aux)
        dtype = state.numerator.dtype
        est = _cdat_estimate.estimate(
            estimator, every, fun, params, updates, state, extra_args, early_refresh
        )
        value, slope, curvature = est.value, est.slope, est.curvature
        sigma_, beta, eps_, max_lr = (
            jnp.asarray(x).astype(dtype) for x in (sigma, ema_decay, eps, max_learning_rate)
        )
        inputs_finite = _all_finite(value, slope, curvature, updates, params, sigma_, beta, eps_)
        inputs_finite = inputs_finite & ~jnp.isnan(max_lr)
        if max_rise is not None:
            kappa, factor = (jnp.asarray(x).astype(dtype) for x in (max_rise, backtrack_factor))
            inputs_finite = inputs_finite & _all_finite(kappa, factor)
        beta = jnp.clip(jnp.where(inputs_finite, beta, 0.0), 0.0, 1.0)
        numerator = jnp.maximum(-jnp.where(inputs_finite, slope, 0.0), 0.0)
        denominator = jnp.abs(jnp.where(inputs_finite, curvature, 0.0)) + jnp.maximum(
            jnp.where(inputs_finite, eps_, 0.0), 0.0
        )
        candidate_numerator = ema(state.numerator, numerator, beta)
        candidate_denominator = ema(state.denominator, denominator, beta)
        # Commit the averages only when they are finite: a huge curvature or eps must not
        # leave an inf in the state that outlives this step.
        finite = inputs_finite & _all_finite(candidate_numerator, candidate_denominator)
        new_numerator = jnp.where(finite, candidate_numerator, state.numerator)
        new_denominator = jnp.where(finite, candidate_denominator, state.denominator)
        # eq (8) on the averages: n ≥ 0 and d ≥ 0, so slope = -ñ and curvature = d̃ are exact.
        learning_rate = cdat_learning_rate(
            -new_numerator, new_denominator, sigma=sigma_, max_learning_rate=max_lr
        ).astype(dtype)
        learning_rate = jnp.where(finite, learning_rate, 0.0)
        proposed, num_backtracks = learning_rate, jnp.zeros((), jnp.int32)
        accepted = jnp.asarray(True)
        if max_rise is not None:
            learning_rate, num_backtracks, accepted = _checked_learning_rate(
                fun,
                params,
                updates,
                value,
                numerator,
                proposed,
                jnp.maximum(jnp.where(finite, kappa, 0.0), 0.0),
                jnp.clip(jnp.where(finite, factor, 0.5), 0.0, 1.0),
                num_backtracks_max,
            )
        quotient, usq, since, refreshes = _cdat_estimate.bookkeeping(est, finite, state, every)
        new_state = ScaleByCdatState(
            learning_rate=learning_rate,
            numerator=new_numerator,
            denominator=new_denominator,
            value=value,
            slope=slope,
            curvature=curvature,
            finite=finite,
            num_updates=optax.safe_increment(state.num_updates),
            proposed_learning_rate=proposed,
            num_backtracks=num_backtracks,
            accepted=accepted,
            quotient=quotient,
            direction_sq_norm=usq,
            since_refresh=since,
            num_refreshes=refreshes,
            num_probes=est.num_probes,
        )
        return _scaled(learning_rate, updates, finite), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_max_backtracks(name: str, value: Any) -> int:
    """``max_backtracks`` as a Python int >= 0 (structural), or a ``TypeError``/``ValueError``."""
    if not isinstance(value, bool | jax.core.Tracer):
        try:
            if operator.index(value) == 0:
                return 0
            if operator.index(value) < 0:
                raise ValueError(f"{name}: max_backtracks must be >= 0, got {value!r}.")
        except TypeError:
            pass  # check_structural_int names the argument
    return _tree.check_structural_int(value, "max_backtracks")


def _checked_learning_rate(
    fun: Callable[[PyTree], Any],
    params: PyTree,
    updates: PyTree,
    value: jax.Array,
    numerator: jax.Array,
    proposed: jax.Array,
    kappa: jax.Array,
    factor: jax.Array,
    max_backtracks: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""The ``max_rise`` check: (learning rate, backtracks, accepted), a bounded ``while_loop``.

    Tries :math:`\eta = c_-^k \eta^{(0)}` for :math:`k = 0, 1, \dots` until
    :math:`f(w + \eta u) \le f(w) + \kappa \eta n` holds with a finite trial value, at most
    ``max_backtracks`` shrinks (or until :math:`\eta` reaches 0); returns 0 when none passed.
    """
    dtype = proposed.dtype

    def trial(eta: jax.Array) -> jax.Array:
        return jnp.asarray(fun(_tree.axpy(eta, updates, params))).astype(dtype)

    def passes(eta: jax.Array, f_trial: jax.Array) -> jax.Array:
        return jnp.isfinite(f_trial) & (f_trial <= value + kappa * eta * numerator)

    def cond(carry: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        k, eta, f_trial = carry
        return (k < max_backtracks) & ~passes(eta, f_trial) & (eta > 0)

    def body(carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[Any, Any, Any]:
        k, eta, _ = carry
        eta = eta * factor
        return k + 1, eta, trial(eta)

    init = (jnp.zeros((), jnp.int32), proposed, trial(proposed))
    k, eta, f_trial = jax.lax.while_loop(cond, body, init)
    accepted = passes(eta, f_trial)
    return jnp.where(accepted, eta, 0.0).astype(dtype), k, accepted


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
      **kwargs: ``ema_decay``, ``eps``, ``max_learning_rate``, ``max_rise``,
        ``backtrack_factor``, ``max_backtracks``, ``has_aux``, ``curvature``, ``every``,
        ``early_refresh`` of :func:`scale_by_cdat`. With Adam or
        RMSProp directions use the loss check, ``max_rise=1.0`` (see :func:`scale_by_cdat`).

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
