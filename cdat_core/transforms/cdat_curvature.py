r"""Curvature estimators for CDAT (``scale_by_cdat(curvature=..., every=...)``).

CDAT's rule, eq (8) of Roulet et al. (2024), needs the slope :math:`s = \nabla f(w)^\top u`
and the curvature :math:`d = u^\top \nabla^2 f(w) u` along the direction :math:`u`. The exact
curvature (a JVP of a JVP) makes a CDAT step cost 1.8-2.9x the XLA flops of a plain SGD step
on the benchmark models (``benchmarks/test_bench_cheap_cdat.py``); the paper's App. C.3
names the way out as future work: "parabolic approximations as done by Mutschler and Zell
[2020], or [computing the edge] at given intervals as done by Liu et al. [2023]". This
module holds those estimators, one frozen dataclass each (strings name the defaults). With
:math:`\phi(t) = f(w + t u)`, :math:`s = \phi'(0)` and :math:`n = \max(-s, 0)`:

========================  ========================================================  ================
``curvature=``            estimate of :math:`d`                                     extra cost
========================  ========================================================  ================
``"exact"``               :math:`\phi''(0)`, forward over forward                   a JVP of a JVP
``"parabolic"``           :math:`2(\phi(h) - \phi(0) - s h)/h^2`                    one forward
``"lagged"``              the previous step's parabola                              none
``GaussNewtonCurvature``  :math:`u^\top J^\top \nabla^2\ell\, J u`                  a JVP of predict
``"forward_edge"``        :math:`2 n / \eta_e` with :math:`\phi(\eta_e) = \phi(0)`  <= K forwards
========================  ========================================================  ================

*Value and slope.* The cheap estimators need :math:`f(w)` and :math:`s`. Pass them as the
extra arguments ``value=`` and ``grad=`` (from the ``jax.value_and_grad`` your loop makes for
the base optimizer) and they are free (:math:`s = \nabla f(w)^\top u`, one inner product);
otherwise one forward-mode JVP of ``value_fn`` computes them. ``"exact"`` with ``every=1``
ignores both, as before (its JVP of a JVP gives them).

*every* :math:`= k`. The curvature is refreshed at the first update and then whenever
:math:`k` updates have passed since the last refresh that gave a finite step. In between,
the Rayleigh quotient of the last refresh, :math:`q = d_r / \lVert u_r\rVert^2`, is reused:
:math:`d_t = q \lVert u_t\rVert^2` (so :math:`\eta_t = \sigma n_t / (q \lVert u_t\rVert^2)`,
the rule with the curvature of the last refreshed direction, as Liu et al. (2023) refresh
their Hessian estimate every :math:`k` steps). The numerator :math:`n_t` is current at every
step. The refresh is a ``lax.cond``: under ``jit`` only the branch taken runs (under ``vmap``
over a batched state, both run). ``every`` is structural when it is a Python int; traced
(``optax.inject_hyperparams`` without ``static_args``) it still works, below 1 counting as 1.

*Early refresh* (``early_refresh=True``). A reused quotient goes stale when the curvature
grows, and a step sized by a stale one passes the edge: on the digits MLP with
:math:`\sigma = 2`, exact ``every=16`` diverged on 2 of 3 seeds with GD, and with Adam (EMA
0.9) diverged on 1 and stalled at the constant-prediction loss on 2 (README, "Cheap CDAT";
with ``early_refresh``, GD came within 5% of ``every=1`` on all 3, refreshing on 13-18% of
the updates). With ``early_refresh``, an update due to reuse refreshes instead
when the last update's lagged parabola (:class:`LaggedCurvature`'s
:math:`d_{t-1}/\lVert u_{t-1}\rVert^2`, free) exceeds the quotient in use, i.e. when
:math:`f` curved up along the last step more than the reused model said. Without EMA this
is :math:`f(w_t) - f(w_{t-1}) > -\eta_{t-1} n_{t-1}(1 - \sigma/2)`: at :math:`\sigma = 2`,
exactly when the last update raised the loss. It needs :math:`f(w_t)`, free with ``value=``.

*Probe step.* ``"parabolic"`` probes at, and ``"forward_edge"`` starts its search from,
:math:`h_t = \eta_{t-1}`, the learning rate of the previous update; at the first update, or
after one of learning rate 0, :math:`h_t = \mu / \lVert u_t\rVert` (``initial_step`` =
:math:`\mu`, a distance in parameter space, as Mutschler and Zell's measuring step along the
normalised direction).

References: M. Mutschler and A. Zell, "Parabolic approximation line search for DNNs",
NeurIPS 2020. H. Liu et al., "Sophia: a scalable stochastic second-order optimizer for
language model pre-training", arXiv:2305.14342, 2023. N. Schraudolph, "Fast curvature
matrix-vector products for second-order gradient descent", Neural Computation 14(7), 2002.
J. Cohen et al., "Gradient descent on neural networks typically occurs at the edge of
stability", ICLR 2021.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from typing import Any

import jax

__all__ = [
    "CURVATURE_NAMES",
    "ExactCurvature",
    "ForwardEdgeCurvature",
    "GaussNewtonCurvature",
    "LaggedCurvature",
    "ParabolicCurvature",
]

#: The names ``curvature=`` accepts (``"gauss_newton"`` needs :class:`GaussNewtonCurvature`).
CURVATURE_NAMES = ("exact", "parabolic", "lagged", "gauss_newton", "forward_edge")


def _check_step(owner: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{owner}: initial_step must be a positive float, got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}: initial_step must be > 0 and finite, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ExactCurvature:
    r"""``curvature="exact"``: :math:`d = u^\top \nabla^2 f(w) u` by a JVP of a JVP.

    Eq (8) of Roulet et al. (2024) as the paper computes it (App. C.3,
    :func:`cdat_core.directional_curvature`); the default, bit for bit the rule before
    estimators existed.
    """


@dataclasses.dataclass(frozen=True)
class ParabolicCurvature:
    r"""``curvature="parabolic"``: the parabola through :math:`\phi(0), \phi'(0), \phi(h)`.

    Mutschler and Zell (2020)'s parabolic approximation (PAL): with :math:`\phi(t) = f(w+tu)`,

    .. math::

        d = \frac{2\,(\phi(h) - \phi(0) - s h)}{h^2}
          = \phi''(0) + \tfrac{h}{3}\phi'''(0) + O(h^2),

    exact on quadratics, one forward pass per refresh. :math:`h` is the probe step (module
    notes): the previous learning rate, so the curvature is the secant one over the distance
    the next step is about to travel.

    Attributes:
      initial_step: :math:`\mu > 0`, the probe's distance :math:`\lVert h u\rVert` when there
        is no previous learning rate.
    """

    initial_step: float = 0.1

    def __post_init__(self) -> None:
        _check_step(type(self).__name__, self.initial_step)


@dataclasses.dataclass(frozen=True)
class LaggedCurvature:
    r"""``curvature="lagged"``: the previous step's parabola, from values the loop computed.

    With :math:`w_t = w_{t-1} + \eta_{t-1} u_{t-1}`, the parabola through
    :math:`f(w_{t-1})`, its slope :math:`s_{t-1}` and :math:`f(w_t)` (all known at step
    :math:`t` without any extra pass) gives the curvature along :math:`u_{t-1}`, converted by
    its Rayleigh quotient to the current direction:

    .. math::

        d_{t-1} = \frac{2\,(f(w_t) - f(w_{t-1}) - \eta_{t-1} s_{t-1})}{\eta_{t-1}^2},
        \qquad d_t = \frac{d_{t-1}}{\lVert u_{t-1}\rVert^2}\,\lVert u_t\rVert^2.

    Mutschler and Zell (2020)'s parabola with the measuring point being the step itself. Exact
    on quadratics along :math:`u_{t-1}`. It assumes the params passed at step :math:`t` are
    those of step :math:`t-1` plus the update returned then, and that :math:`f` is the same
    function at both (full batch, or the same batch): with a new mini-batch each step the
    batch-to-batch change of :math:`f` enters :math:`d`. At the first update and after an
    update of learning rate 0 there is no previous step: the parabolic probe (one forward,
    at :math:`h = \mu/\lVert u\rVert`) is used instead.

    Attributes:
      initial_step: :math:`\mu > 0` of that fallback probe.
    """

    initial_step: float = 0.1

    def __post_init__(self) -> None:
        _check_step(type(self).__name__, self.initial_step)


@dataclasses.dataclass(frozen=True)
class GaussNewtonCurvature:
    r"""Gauss-Newton curvature :math:`d = u^\top J^\top \nabla^2 \ell\, J u` (Schraudolph, 2002).

    For :math:`f(w) = \ell(m(w))`, the generalised Gauss-Newton matrix drops the second
    derivatives of the model :math:`m` from the Hessian; one JVP of ``predict`` and a JVP of
    a JVP of ``loss`` on the outputs give :math:`f`, :math:`s` and :math:`d \ge 0`
    (:func:`cdat_core.gauss_newton_curvature`), no pass over the model's second derivatives.

    The model is split once, when the transformation is built; the data flow at call time,
    as keyword arguments of ``update``, so the step is ``jit``-friendly (the two functions are
    static) and nothing is rebuilt per batch: ``predict(params, **kw) -> outputs`` and
    ``loss(outputs, **kw) -> scalar`` each receive the extra arguments their signatures name
    (as ``value_fn`` does). The objective of every pass, trials of ``max_rise`` included, is
    then ``loss(predict(params))``; ``value_fn`` is not needed (and not used).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import cdat_core as cc
      >>> X = jnp.array([[1.0, 2.0], [0.0, 1.0]]); y = jnp.array([1.0, 0.0])
      >>> gn = cc.GaussNewtonCurvature(lambda w, x: x @ w,
      ...                              lambda out, y: 0.5 * jnp.sum((out - y) ** 2))
      >>> opt = cc.cdat(optax.sgd(1.0), sigma=1.0, curvature=gn)
      >>> w = jnp.zeros(2); g = jax.grad(lambda w: 0.5 * jnp.sum((X @ w - y) ** 2))(w)
      >>> updates, state = opt.update(g, opt.init(w), w, x=X, y=y)
      >>> float(state[1].curvature)  # |Xu|² = 5² + 2², u = -g = (1, 2): GN is the Hessian here
      29.0

    Attributes:
      predict: ``predict(params, **kw)``, the model's outputs (a pytree of floats).
      loss: ``loss(outputs, **kw)``, a real scalar convex in the outputs.
    """

    predict: Callable[..., Any]
    loss: Callable[..., Any]

    def __post_init__(self) -> None:
        for field in ("predict", "loss"):
            if not callable(getattr(self, field)):
                raise TypeError(f"GaussNewtonCurvature: {field} must be callable.")


@dataclasses.dataclass(frozen=True)
class ForwardEdgeCurvature:
    r"""``curvature="forward_edge"``: the edge of :math:`f` itself along :math:`u`, by forwards.

    Definition (7) of Roulet et al. (2024) applied to :math:`f` instead of its quadratic
    model: :math:`\eta_e` with :math:`\phi(\eta_e) = \phi(0)`, the step beyond which the loss
    rises (Cohen et al., 2021). A safeguarded secant search on
    :math:`r(t) = (\phi(t) - \phi(0))/t` (:math:`r(0) = s < 0`, :math:`r(\eta_e) = 0`, and
    :math:`r` is linear for a quadratic :math:`f`): from the probe step, expand (secant
    extrapolation, at most 4x) until a probe rises or is non-finite, then the Illinois regula
    falsi (Dowell and Jarratt, 1971) inside the bracket (bisection when the secant point is
    not in its middle 90%, or shrinking 4x from a non-finite top), stopping when
    :math:`|r(t)| \le \text{rtol}\cdot n`, the next probe is within ``rtol`` of the last
    one or the bracket is within ``rtol``, after at most
    ``max_evaluations`` forward passes. The edge is the secant root over the last bracket,
    or, when no probe rose, the root of the parabola through :math:`\phi(0)`, :math:`s` and
    the largest probe (both exact for a quadratic). It is turned into a curvature

    .. math::

        d = 2 n / \eta_e \quad (n = \max(-s, 0)),

    the curvature of the quadratic with the same slope and the same edge, so the rule's
    :math:`\sigma` keeps its meaning: :math:`\eta = \sigma n / d = (\sigma/2)\,\eta_e`, and
    ``sigma=2`` steps to the edge of :math:`f`. On a quadratic :math:`d = u^\top H u`; in
    general :math:`d = \phi''(0) + \tfrac{\eta_e}{3}\phi'''(0) + O(\eta_e^2)`. With no descent
    (:math:`n = 0`) there is no search and the last quotient is kept.

    Attributes:
      max_evaluations: :math:`K \ge 1`, forward passes per refresh at most (a Python int).
      rtol: the relative tolerance of the edge, in (0, 1).
      initial_step: :math:`\mu > 0`, the first probe's distance without a previous step.
    """

    max_evaluations: int = 6
    rtol: float = 1e-2
    initial_step: float = 0.1

    def __post_init__(self) -> None:
        name, k = type(self).__name__, self.max_evaluations
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{name}: max_evaluations must be a Python int >= 1, got {k!r}.")
        r = self.rtol
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 < r < 1:
            raise ValueError(f"{name}: rtol must be in (0, 1), got {r!r}.")
        _check_step(name, self.initial_step)


Estimator = (
    ExactCurvature
    | ParabolicCurvature
    | LaggedCurvature
    | GaussNewtonCurvature
    | ForwardEdgeCurvature
)
_BY_NAME: dict[str, Callable[[], Any]] = {
    "exact": ExactCurvature,
    "parabolic": ParabolicCurvature,
    "lagged": LaggedCurvature,
    "forward_edge": ForwardEdgeCurvature,
}
_TYPES = (
    ExactCurvature,
    ParabolicCurvature,
    LaggedCurvature,
    GaussNewtonCurvature,
    ForwardEdgeCurvature,
)


def resolve_curvature(curvature: Any, name: str) -> Estimator:
    """The estimator ``curvature`` names, or a ``ValueError`` naming ``curvature``."""
    if isinstance(curvature, _TYPES):
        return curvature
    if isinstance(curvature, str) and curvature in _BY_NAME:
        return _BY_NAME[curvature]()
    if curvature == "gauss_newton":
        raise ValueError(
            f"{name}: curvature='gauss_newton' needs the model split once: pass "
            f"curvature=cdat_core.GaussNewtonCurvature(predict, loss)."
        )
    raise ValueError(
        f"{name}: curvature must be one of {CURVATURE_NAMES} or an estimator object "
        f"(cdat_core.ParabolicCurvature(...), ...), got {curvature!r}."
    )


def check_every(every: Any, name: str) -> int | None:
    """``every`` as a Python int >= 1, ``None`` when traced, or a ``ValueError`` naming it."""
    if isinstance(every, jax.core.Tracer):
        return None
    try:
        if isinstance(every, bool):
            raise TypeError
        value = operator.index(every)
    except TypeError:
        raise ValueError(f"{name}: every must be an int >= 1, got {every!r}.") from None
    if value < 1:
        raise ValueError(f"{name}: every must be an int >= 1, got {every!r}.")
    return value
