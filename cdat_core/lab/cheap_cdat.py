r"""Cheap CDAT in the main job: the estimators it compares, and their amortized step cost.

The verify job runs CDAT with two cheaper curvature estimators of
:func:`cdat_core.scale_by_cdat` beside the exact one (claims ``C7`` and ``C8``,
:mod:`cdat_core.lab.claims.cheap_cdat`), registered as tuners in
:data:`cdat_core.lab.tuners.TUNERS`:

- ``cdat_lagged``: ``curvature="lagged"``, the parabola of the previous step, built only from
  values the loop already has (the expected cost is that of a plain step);
- ``cdat_every16``: ``curvature="exact", every=16``, the exact curvature refreshed every 16
  updates and its Rayleigh quotient reused in between (issue 15's reference point,
  :math:`1 + 1.2/16 \approx 1.08` times a plain step).

:data:`ESTIMATORS` lists them from the cheapest expected; :func:`step_costs` counts, with
XLA (:func:`cdat_core.lab.costs.xla_costs`, compiled and never run), the flops of one step
of the lab's loop (value and gradient, base direction, tuner, update) on a refresh and on a
reuse, and the amortized cost :math:`(F_{\text{refresh}} + (k-1) F_{\text{reuse}}) / k`
against a plain gradient-descent step. Each is counted with the optimizer state closed over the
step (a constant), so that XLA folds the refresh test (and the lagged estimator's test for a
previous step) and keeps only the branch taken: a refresh is the first update's, a reuse the
second's, and with ``every=1`` the second update's is the steady-state cost (the lagged
parabola probes with one forward pass only at the first update, when there is no previous
step). Counting the step with its state as an argument would count the dearer branch of each
``lax.cond``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

from cdat_core.lab import costs
from cdat_core.lab.tuners import make

__all__ = ["ESTIMATORS", "EVERY", "cheap_costs", "step_costs"]

#: The cheap estimators of the main job (tuner names), cheapest expected first.
ESTIMATORS = ("cdat_lagged", "cdat_every16")
#: The refresh period of each (the ``every`` it is built with).
EVERY = {"cdat_lagged": 1, "cdat_every16": 16}


def _step(loss: Callable[..., Any], opt: optax.GradientTransformation) -> Callable[..., Any]:
    def run(w: Any, state: Any, x: jax.Array, y: jax.Array) -> Any:
        def fun(p: Any) -> jax.Array:
            return loss(p, x, y)

        value, grad = jax.value_and_grad(fun)(w)
        updates, state = opt.update(grad, state, w, value_fn=fun, value=value, grad=grad)
        return optax.apply_updates(w, updates), state, value

    return run


def _flops(fn: Callable[..., Any], *args: Any) -> float:
    return float(costs.xla_costs(fn, *args).flops)


def _plain_flops(problem: Any, base: str) -> float:
    """Flops of one plain step of ``base`` (a constant learning rate)."""
    plain = make("constant", base)
    data = (problem.inputs, problem.targets)
    return _flops(_step(problem.loss, plain), problem.params, plain.init(problem.params), *data)


def step_costs(
    problem: Any, base: str, tuner: str, sigma: float = 2.0, *, plain: float | None = None
) -> dict[str, float]:
    r"""XLA-counted flops of one step of ``tuner`` on ``base``, against a plain ``base`` step.

    Args:
      problem: a digits problem (``loss``, ``params``, ``inputs``, ``targets``).
      base: a name in :data:`cdat_core.lab.bases.BASES`.
      tuner: ``"cdat"`` (exact) or a name in :data:`ESTIMATORS`.
      sigma: CDAT's :math:`\sigma` (no effect on the counts).
      plain: the flops of a plain step of ``base`` on ``problem`` when already counted
        (:func:`cheap_costs` counts them once per problem), else ``None``.

    Returns:
      ``plain``, ``refresh`` and ``reuse`` flops, ``every``, and ``amortized``, the ratio
      :math:`(F_{\text{refresh}} + (k-1) F_{\text{reuse}}) / (k F_{\text{plain}})`.

    Example:
      >>> from cdat_core.lab import cheap_cdat, problems
      >>> p = problems.subset(problems.digits_mlp((8,)), 32)
      >>> exact = cheap_cdat.step_costs(p, "gd", "cdat")
      >>> lagged = cheap_cdat.step_costs(p, "gd", "cdat_lagged")
      >>> bool(lagged["amortized"] < exact["amortized"]), exact["every"]
      (True, 1)
    """
    every = EVERY.get(tuner, 1)
    data = (problem.inputs, problem.targets)
    params = problem.params
    tuned = make(tuner, base, sigma=sigma)
    f_plain = _plain_flops(problem, base) if plain is None else plain
    step = _step(problem.loss, tuned)

    def closed_over(state: Any) -> float:
        # the state a constant: XLA folds the refresh (and lag) tests, keeping the branch taken
        return _flops(lambda w, x, y: step(w, state, x, y), params, *data)

    first = tuned.init(params)
    after_one = jax.jit(step)(params, first, *data)[1]  # one program, not op by op
    # every = 1: the steady-state update (the lagged parabola has the previous step's values),
    # a refresh and a reuse alike; every = k: the first update is a refresh, the next a reuse.
    f_reuse = closed_over(after_one)
    f_refresh = f_reuse if every == 1 else closed_over(first)
    amortized = (f_refresh + (every - 1) * f_reuse) / (every * f_plain)
    return {
        "plain": f_plain,
        "refresh": f_refresh,
        "reuse": f_reuse,
        "every": every,
        "amortized": amortized,
    }


def cheap_costs(problems: Mapping[str, Any], base: str = "gd") -> dict[str, Any]:
    """:func:`step_costs` of exact CDAT and of every estimator, on each problem.

    Args:
      problems: description -> problem (e.g. the digits MLP and CNN of the plan).
      base: the base optimizer.

    Returns:
      ``{"problems": {description: {tuner: step_costs}}, "estimators": ESTIMATORS}``.
    """
    out = {}
    for name, p in problems.items():
        plain = _plain_flops(p, base)
        out[name] = {t: step_costs(p, base, t, plain=plain) for t in ("cdat", *ESTIMATORS)}
    return {"problems": out, "estimators": list(ESTIMATORS), "base": base}
