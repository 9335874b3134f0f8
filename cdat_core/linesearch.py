r"""Backtracking linesearch with the sufficient-decrease criterion of Roulet et al. (2024).

The criterion is eq (1) of "Stepping on the Edge" with the relative decrease :math:`\delta`
of its Appendix C.3:

.. math::

    f(w + \eta u) \le f(w) + \delta\,|f(w)| + c\,\eta\,\nabla f(w)^\top u,

and the search tries :math:`\eta_{t,k} = c_-^k\,\eta_{t,0}` for :math:`k = 0, \dots, K - 1`
(:math:`K` = ``max_steps``), keeping the first (hence largest) one that satisfies it
(:func:`backtracking_linesearch`). The initial guess (:func:`initial_learning_rate`) is the
paper's :math:`\eta_{t,0} = \min\{c_+\,\eta_{t-1}, \eta_{\max}\}` after an accepted step and
:math:`\min\{c_-\,\check\eta_{t-1}, \eta_{\max}\}` after a failed search whose smallest trial
was :math:`\check\eta_{t-1}`: consecutive failed searches continue one geometric sequence
below the smallest step already tried, so a full-batch search that the budget :math:`K` cuts
short resumes at the next step instead of restarting from :math:`\eta_{\max}` and failing
for ever. The paper's full-batch search "runs until the criterion is satisfied"; this is that
search spread over consecutive steps, with a zero update for each step it is still running.

Both functions are pure and run under ``jit`` and ``vmap``: the loop is a ``lax.while_loop``
bounded by the structural ``max_steps`` (a Python int, bound at trace time), while
:math:`c`, :math:`\delta`, :math:`c_-`, :math:`c_+` and the learning rates are traced numbers,
so changing them never recompiles. Pytree arithmetic goes through :mod:`cdat_core._tree`, so
params sharded across devices need no gathering.

Relation to ``optax.scale_by_backtracking_linesearch`` (optax 0.2.8), the implementation the
paper used. With a descent direction and an accepted step, the chosen learning rates and the
numbers of evaluations agree under the mapping (cdat_core → optax):

* ``c`` → ``slope_rtol``; ``delta`` → ``rtol`` (optax writes :math:`(1+\delta)f(w)`, equal to
  :math:`f(w) + \delta|f(w)|` for :math:`f(w) \ge 0`, see :func:`backtracking_linesearch`);
  no absolute tolerance → ``atol=0.0``; ``decrease_factor`` → ``decrease_factor``.
* ``max_steps`` → ``max_backtracking_steps + 1``: optax tries
  :math:`k = 0, \dots, \text{max\_backtracking\_steps}`, one more than its name says.
* ``initial_learning_rate(previous, increase_factor=c₊, max_learning_rate=m)`` → optax's
  guess ``min(increase_factor * state.learning_rate, max_learning_rate)``; optax's state
  starts at ``learning_rate=1.0``, so pass ``previous=1.0`` at the first step.
* ``num_steps`` → ``info.num_linesearch_steps`` (both count evaluations of :math:`f`).

They differ on purpose where optax's search fails:

* No trial accepted within the budget: optax steps with the last *rejected* learning rate
  :math:`c_-^{M}\eta_0` (:math:`M` = ``max_backtracking_steps``) when its value was finite
  (an ascent direction therefore moves uphill), and with 0 when it was not; here the
  learning rate is always 0 and ``accepted=False``.
* After a learning rate of 0, optax's next guess is :math:`\min(c_+ \cdot 0, \eta_{\max}) = 0`
  (or ``inf * 0 = nan`` for :math:`c_+ = \infty`), so it never moves again. Here the next
  search continues at :math:`c_-\check\eta_{t-1}` when given ``smallest_tried`` (as
  :func:`cdat_core.scale_by_linesearch` does), and restarts from :math:`\eta_{\max}`
  otherwise. The learning rates therefore agree with optax's while every search accepts
  (what ``tests/test_linesearch/test_linesearch_vs_optax.py`` compares bit for bit), and
  differ from the first failed search on.
* optax counts a trial value of :math:`-\infty` as accepted; here every non-finite trial value
  is a failed trial.
* A direction that is not a descent direction (slope :math:`\ge 0`), or a non-finite value or
  slope: optax still runs its search (and then steps with its last rejected trial); here the
  search does not start and the learning rate is 0.

Hyperparameters given as Python numbers or concrete arrays are checked when a function is
called (and when :func:`cdat_core.scale_by_linesearch` is built), with a ``ValueError`` that
names the argument: :math:`c \ge 0`, :math:`\delta \ge 0`, :math:`c_- \in (0, 1)`,
:math:`c_+ \ge 1`, :math:`\eta_0, \eta_{\max}` finite and positive. Traced ones cannot be
checked at trace time; each function documents the defined, finite result it gives them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cdat_core import _tree

__all__ = ["LinesearchResult", "backtracking_linesearch", "initial_learning_rate"]

PyTree = Any
ArrayLike = Any


class LinesearchResult(NamedTuple):
    r"""Result of :func:`backtracking_linesearch`.

    Attributes:
      learning_rate: the accepted :math:`\eta = c_-^k \eta_0`, or 0 when no trial was
        accepted (so the caller's update :math:`\eta u` is exactly zero). A scalar in at least
        float32.
      value: :math:`f(w + \eta u)` at the returned ``learning_rate``: the value of the
        accepted trial, or the ``value`` passed in (:math:`f(w)`, the step being zero) when
        nothing was accepted. In the dtype ``fun`` returns.
      num_steps: the number of evaluations of ``fun`` made (int32): :math:`k + 1` when
        trial :math:`k` was accepted, ``max_steps`` when none was, 0 when the search did not
        start (invalid input, see :func:`backtracking_linesearch`).
      accepted: whether some trial satisfied the criterion (bool).
      smallest_tried: the last, hence smallest, learning rate tried,
        :math:`c_-^{\,\text{num\_steps}-1}\eta_0` (the accepted one when ``accepted``), 0 when
        the search did not start. Pass it to :func:`initial_learning_rate` so that the next
        search continues below it after a failure. Same dtype as ``learning_rate``.
    """

    learning_rate: jax.Array
    value: jax.Array
    num_steps: jax.Array
    accepted: jax.Array
    smallest_tried: jax.Array


class _SearchState(NamedTuple):
    """What the ``while_loop`` carries: the next trial, the last one and its outcome."""

    num_steps: jax.Array
    learning_rate: jax.Array
    value: jax.Array
    accepted: jax.Array
    tried: jax.Array


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_scalar(name: str, x: Any) -> None:
    """Raise ``ValueError`` unless ``x`` is a scalar (0-d) number."""
    if jnp.ndim(x) != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {jnp.shape(x)}.")


def _check_concrete(name: str, x: Any, valid: Callable[[float], bool], requirement: str) -> None:
    """Raise ``ValueError`` when ``x`` is a concrete number that violates ``requirement``.

    Traced values cannot be checked at trace time; the functions give them defined results
    instead (documented on each).
    """
    _check_scalar(name, x)
    if _is_tracer(x):
        return
    v = float(x)
    if not valid(v):
        raise ValueError(f"{name} must be {requirement}, got {v}.")


_FINITE_POSITIVE = (lambda v: math.isfinite(v) and v > 0, "finite and positive")
_FINITE_NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0, "finite and non-negative")
_REQUIREMENTS: dict[str, tuple[Callable[[float], bool], str]] = {
    "c": _FINITE_NON_NEGATIVE,
    "delta": _FINITE_NON_NEGATIVE,
    "decrease_factor": (lambda v: 0 < v < 1, "in the open interval (0, 1)"),
    "increase_factor": (lambda v: v >= 1, "at least 1 (inf allowed)"),
    "max_learning_rate": _FINITE_POSITIVE,
    "initial_learning_rate": _FINITE_POSITIVE,
}


def _check_hyperparameters(**kwargs: Any) -> None:
    """Raise ``ValueError`` naming the argument for a concrete hyperparameter out of range.

    Called when a transformation is built and when a function is traced: Python numbers and
    concrete arrays are checked, traced values are left to the sanitising ``where`` of each
    function (documented there). ``None`` means "not given".
    """
    for name, x in kwargs.items():
        if x is None:
            continue
        valid, requirement = _REQUIREMENTS[name]
        _check_concrete(name, x, valid, requirement)


def initial_learning_rate(
    previous: ArrayLike,
    *,
    increase_factor: ArrayLike = math.inf,
    max_learning_rate: ArrayLike = 1.0,
    smallest_tried: ArrayLike = 0.0,
    decrease_factor: ArrayLike = 0.8,
) -> jax.Array:
    r"""Initial guess of the backtracking search, Appendix C.3 of Roulet et al. (2024).

    .. math::

        \eta_{t,0} = \begin{cases}
          \min\{c_+\,\eta_{t-1},\ \eta_{\max}\} & \text{if } \eta_{t-1} > 0, \\
          \min\{c_-\,\check\eta_{t-1},\ \eta_{\max}\}
            & \text{if } \eta_{t-1} = 0 \text{ and }
              c_-\,\check\eta_{t-1} \ge \eta_{\text{tiny}}, \\
          \eta_{\max} & \text{otherwise,}
        \end{cases}

    with :math:`\eta_{t-1}` the learning rate accepted at the previous step (0 when that
    search failed), :math:`c_+ \ge 1` the increase factor, :math:`\eta_{\max}` the maximal
    learning rate (1 in the paper), :math:`\check\eta_{t-1}` the smallest learning rate tried
    by the previous search (``smallest_tried``; 0 when unknown or at the first step),
    :math:`c_- \in (0, 1)` the decrease factor and :math:`\eta_{\text{tiny}}` the smallest
    positive normal number of the dtype. The first line is the paper's rule; :math:`c_+ =
    \infty` (the default) starts every search after an accepted step from :math:`\eta_{\max}`
    (paper's grid: :math:`c_+ \in \{4, \infty\}`).

    The second line makes consecutive failed searches one search: the paper's full-batch
    linesearch "runs until the criterion is satisfied", while a search here stops after
    ``max_steps`` trials. After failed searches of :math:`K` trials each from
    :math:`\eta_{\max}`, search :math:`j` tries :math:`c_-^{k}\eta_{\max}` for
    :math:`k = jK, \dots, (j+1)K - 1`: the geometric sequence continues below the smallest step
    already tried, without gaps, so any learning rate the loss can resolve is reached after
    finitely many steps instead of restarting from :math:`\eta_{\max}` and failing for ever
    (optax's :math:`\min\{c_+ \cdot 0, \eta_{\max}\} = 0` stays at 0 for ever). When
    :math:`c_-\check\eta_{t-1}` would be subnormal the sequence has run out of learning rates
    the dtype represents to full precision, and it restarts from :math:`\eta_{\max}`.

    Traced arguments are sanitised: a :math:`c_+` below 1 or NaN counts as 1 (keep the
    previous learning rate); a :math:`c_-` outside :math:`(0, 1)` or a ``smallest_tried``
    that is not finite and positive gives the restart :math:`\eta_{\max}`; a
    ``max_learning_rate`` that is NaN, infinite or below :math:`\eta_{\text{tiny}}` gives 0,
    which :func:`backtracking_linesearch` treats as "do not search" (learning rate 0, zero
    update).
    A ``previous`` that is not finite or below :math:`\eta_{\text{tiny}}` (0, negative,
    subnormal) counts as a failed search.

    Args:
      previous: :math:`\eta_{t-1}`, a scalar (0 after a failed search).
      increase_factor: :math:`c_+ \ge 1`, possibly ``inf``.
      max_learning_rate: :math:`\eta_{\max}`, finite and positive.
      smallest_tried: :math:`\check\eta_{t-1}`, the smallest learning rate the previous search
        tried (:attr:`LinesearchResult.smallest_tried`); only used when ``previous`` is 0.
        The default 0 restarts a failed search from :math:`\eta_{\max}`.
      decrease_factor: :math:`c_- \in (0, 1)`, the search's decrease factor.

    Returns:
      :math:`\eta_{t,0} \in (0, \eta_{\max}]` (0 only for an invalid traced
      ``max_learning_rate``), a scalar in at least float32 (the promotion of the dtypes of
      ``previous`` and ``smallest_tried`` with float32).

    Raises:
      ValueError: for a concrete ``increase_factor`` below 1 (NaN included), a concrete
        ``max_learning_rate`` that is not finite and positive, a concrete ``decrease_factor``
        outside :math:`(0, 1)`, or non-scalar inputs.

    Example:
      >>> import cdat_core as cc
      >>> float(cc.initial_learning_rate(0.1, increase_factor=4.0))
      0.4...
      >>> float(cc.initial_learning_rate(0.5, increase_factor=4.0))  # capped at the maximum
      1.0
      >>> float(cc.initial_learning_rate(0.0, increase_factor=4.0))  # failed search: restart
      1.0
      >>> # A failed search whose last trial was 0.01 continues below it: 0.5 * 0.01.
      >>> round(float(cc.initial_learning_rate(0.0, smallest_tried=0.01, decrease_factor=0.5)), 6)
      0.005
    """
    _check_scalar("previous", previous)
    _check_scalar("smallest_tried", smallest_tried)
    _check_hyperparameters(
        increase_factor=increase_factor,
        max_learning_rate=max_learning_rate,
        decrease_factor=decrease_factor,
    )
    dtype = _tree.accumulation_dtype(
        *(jnp.result_type(x) for x in (previous, smallest_tried) if hasattr(x, "dtype"))
    )
    previous, smallest, increase, decrease, max_lr = (
        jnp.asarray(x).astype(dtype)
        for x in (previous, smallest_tried, increase_factor, decrease_factor, max_learning_rate)
    )
    # c₊·η_{t−1} after an accepted step (inf allowed, inf * 0 never formed). A subnormal
    # η_{t−1} counts as a failure: the CPU may flush it to 0 in the product.
    tiny = jnp.finfo(dtype).tiny
    accepted = jnp.isfinite(previous) & (previous >= tiny)
    safe_increase = jnp.where(increase >= 1, increase, 1.0)  # NaN and c₊ < 1 → 1
    grown = jnp.where(accepted, safe_increase, 1.0) * jnp.where(accepted, previous, 1.0)
    # c₋·η̌_{t−1} after a failed one, while it is a normal number.
    usable = jnp.isfinite(smallest) & (smallest > 0) & (decrease > 0) & (decrease < 1)
    below = jnp.where(usable, decrease, 0.5) * jnp.where(usable, smallest, 1.0)
    continues = ~accepted & usable & (below >= tiny)
    guess = jnp.where(accepted, grown, jnp.where(continues, below, max_lr))
    valid_max = jnp.isfinite(max_lr) & (max_lr >= tiny)
    return jnp.where(valid_max, jnp.minimum(guess, max_lr), 0.0)


def backtracking_linesearch(
    fun: Callable[..., Any],
    params: PyTree,
    direction: PyTree,
    *args: Any,
    value: ArrayLike,
    slope: ArrayLike,
    initial_learning_rate: ArrayLike = 1.0,
    c: ArrayLike = 0.0,
    delta: ArrayLike = 0.0,
    decrease_factor: ArrayLike = 0.8,
    max_steps: int = 30,
) -> LinesearchResult:
    r"""Backtracking linesearch: eq (1) with the relative decrease of Appendix C.3.

    Returns the largest :math:`\eta = c_-^k\,\eta_0`, :math:`k \in \{0, \dots, K-1\}`, with

    .. math::

        f(w + \eta u) \le f(w) + \delta\,|f(w)| + c\,\eta\,\nabla f(w)^\top u,

    where :math:`f` is ``fun``, :math:`w` the ``params``, :math:`u` the ``direction``,
    :math:`\eta_0` the ``initial_learning_rate`` (see :func:`initial_learning_rate`),
    :math:`c_- \in (0, 1)` the ``decrease_factor``, :math:`K` ``max_steps``, :math:`c \ge 0`
    the sufficient-decrease coefficient (the paper uses :math:`c \in \{0, 10^{-4}, 0.5\}`) and
    :math:`\delta \ge 0` the relative decrease (:math:`\{0, 10^{-3}\}`, with :math:`c = 0`).
    Trials are evaluated in order :math:`k = 0, 1, \dots` and the search stops at the first
    accepted one, so the accepted :math:`\eta` is maximal among the trials; a trial whose value
    is not finite (NaN, :math:`\pm\infty`) counts as rejected.

    The paper writes the relaxed bound as :math:`(1 + \delta) f(w)`. Its losses are
    non-negative, where the two forms agree; for :math:`f(w) < 0` the literal form would make
    the criterion *stricter* than :math:`\delta = 0` (and unsatisfiable as
    :math:`\eta \to 0`), against the purpose of :math:`\delta` (keeping the search from getting
    stuck at vanishing learning rates), so :math:`f(w) + \delta |f(w)|` is used here.

    Args:
      fun: ``fun(params, *args)`` returning a real scalar.
      params: :math:`w`, a pytree of float arrays (``None`` subtrees allowed).
      direction: :math:`u`, a pytree with the structure and shapes of ``params``; cast to
        the params' dtypes.
      *args: extra positional arguments passed to ``fun`` (data, targets, ...).
      value: :math:`f(w)`, passed in because it usually comes with the gradient.
      slope: :math:`\nabla f(w)^\top u`; must be negative (a descent direction).
      initial_learning_rate: :math:`\eta_0 > 0`.
      c: :math:`c \ge 0`.
      delta: :math:`\delta \ge 0`.
      decrease_factor: :math:`c_- \in (0, 1)`.
      max_steps: :math:`K \ge 1`, the maximal number of evaluations of ``fun``. Structural:
        a Python int.

    Returns:
      ``LinesearchResult(learning_rate, value, num_steps, accepted, smallest_tried)``; see
      :class:`LinesearchResult`. When no trial is accepted, ``learning_rate`` is 0, ``value``
      is the ``value`` passed in, ``accepted`` is False and ``smallest_tried`` is
      :math:`c_-^{K-1}\eta_0`, below which the next search continues
      (:func:`initial_learning_rate`). The search does not start (``num_steps`` 0,
      ``learning_rate`` and ``smallest_tried`` 0, not accepted) when ``slope`` is not negative
      (an ascent or flat direction, including empty params), when ``value`` or ``slope`` is not
      finite, or when a traced ``initial_learning_rate``, ``c``, ``delta`` or
      ``decrease_factor`` is out of range or not finite. The learning rate is never NaN.

    Raises:
      TypeError: when ``params`` or ``direction`` has a non-float leaf, ``fun`` does not
        return a real scalar, or ``max_steps`` is not a Python int.
      ValueError: when ``direction``'s structure or shapes differ from ``params``', when a
        hyperparameter is not a scalar, when ``max_steps < 1``, or when a concrete
        hyperparameter is out of range (:math:`\eta_0 \le 0`, :math:`c < 0`,
        :math:`\delta < 0`, :math:`c_- \notin (0, 1)`, or not finite).

    Under ``vmap`` the loop runs until the slowest member of the batch stops (the others'
    results are kept as they were when they stopped).

    References:
      Roulet, Agarwala, Grill, Swirszcz, Blondel, Pedregosa, "Stepping on the Edge: Curvature
      Aware Learning Rate Tuners", NeurIPS 2024, eq (1) and Appendix C.3.

    Example:
      On :math:`f(w) = \|w\|^2` with :math:`u = -\nabla f(w)`, the step 1 overshoots and the
      step 1/2 lands on the minimum:

      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> f = lambda w: jnp.sum(w**2)
      >>> w = jnp.array([1.0, -2.0])
      >>> g = 2 * w
      >>> u = -g
      >>> res = cc.backtracking_linesearch(
      ...     f, w, u, value=f(w), slope=jnp.sum(g * u), c=1e-4, decrease_factor=0.5
      ... )
      >>> float(res.learning_rate), float(res.value), int(res.num_steps), bool(res.accepted)
      (0.5, 0.0, 2, True)
      >>> res = cc.backtracking_linesearch(f, w, g, value=f(w), slope=jnp.sum(g * g))
      >>> float(res.learning_rate), bool(res.accepted)  # ascent direction: no step
      (0.0, False)
    """
    steps = _tree.check_structural_int(max_steps, "max_steps")
    direction = _tree.match_dtypes(params, direction, "direction")
    _check_scalar("value", value)
    _check_scalar("slope", slope)
    _check_hyperparameters(
        initial_learning_rate=initial_learning_rate,
        c=c,
        delta=delta,
        decrease_factor=decrease_factor,
    )

    def objective(w: PyTree) -> jax.Array:
        return jnp.asarray(fun(w, *args))

    out = jax.eval_shape(objective, params)
    _tree.check_scalar_output(out, "fun")
    out_dtype = out.dtype
    leaf_dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    dtype = _tree.accumulation_dtype(out_dtype, *leaf_dtypes)

    value, slope, eta0, c, delta, factor = (
        jnp.asarray(x).astype(dtype)
        for x in (value, slope, initial_learning_rate, c, delta, decrease_factor)
    )
    valid = (
        jnp.isfinite(value)
        & jnp.isfinite(slope)
        & (slope < 0)
        & jnp.isfinite(eta0)
        & (eta0 > 0)
        & jnp.isfinite(c)
        & (c >= 0)
        & jnp.isfinite(delta)
        & (delta >= 0)
        & (factor > 0)
        & (factor < 1)
    )
    # Sanitised numbers: every branch below stays finite even when the search does not start.
    safe_value = jnp.where(valid, value, 0.0)
    safe_slope = jnp.where(valid, slope, -1.0)
    safe_c = jnp.where(valid, c, 0.0)
    safe_eta0 = jnp.where(valid, eta0, 1.0)
    safe_factor = jnp.where(valid, factor, 0.5)
    bound = safe_value + jnp.where(valid, delta, 0.0) * jnp.abs(safe_value)

    def cond(state: _SearchState) -> jax.Array:
        return valid & ~state.accepted & (state.num_steps < steps)

    def body(state: _SearchState) -> _SearchState:
        eta = state.learning_rate
        trial = objective(_tree.axpy(eta, direction, params)).astype(out_dtype)
        trial_acc = trial.astype(dtype)
        ok = jnp.isfinite(trial_acc) & (trial_acc <= bound + safe_c * eta * safe_slope)
        # η_{k+1} = c₋·η_k by repeated multiplication (as optax does), kept on acceptance.
        next_eta = jnp.where(ok, eta, safe_factor * eta)
        return _SearchState(state.num_steps + 1, next_eta, trial, ok, eta)

    init = _SearchState(
        num_steps=jnp.zeros((), jnp.int32),
        learning_rate=safe_eta0,
        value=value.astype(out_dtype),
        accepted=jnp.zeros((), bool),
        tried=jnp.zeros((), dtype),
    )
    final = jax.lax.while_loop(cond, body, init)
    accepted = final.accepted
    return LinesearchResult(
        learning_rate=jnp.where(accepted, final.learning_rate, 0.0).astype(dtype),
        value=jnp.where(accepted, final.value, value.astype(out_dtype)),
        num_steps=final.num_steps,
        accepted=accepted,
        smallest_tried=final.tried,
    )
