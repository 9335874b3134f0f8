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
slope, curvature, eigenvalue, gradient, direction or param gives learning rate 0 and an
exactly zero update (selected with ``where``, never by multiplying), recorded in the state;
params never become NaN through a tuner, and nothing non-finite is committed to a state.

Numeric hyperparameters are traced, so ``optax.inject_hyperparams`` can change them at run
time without recompiling. Concrete ones (Python numbers, or arrays outside ``jit``) are
range-checked when the transformation is built, with a ``ValueError`` that names the
argument; traced ones are sanitised at each step as each factory documents, so a bad value
never outlives the step that used it. Structural arguments (``num_iters``, ``max_steps``) are
Python ints: under ``optax.inject_hyperparams`` name them in ``static_args``.

*Losses with auxiliary outputs.* Every tuner takes ``has_aux`` (a Python bool, default
``False``, bound when it is built): with ``has_aux=True``, ``value_fn(params, **kw)`` returns
``(loss, aux)``, as for ``jax.value_and_grad(..., has_aux=True)``, with ``aux`` any pytree
(metrics, integer counters, flags, batch statistics). The tuner uses the loss alone and drops
``aux`` before its JVPs, gradients and trials, so no tangent is pushed through it and, under
``jit``, XLA removes its computation from the tuner's passes. A ``value_fn`` that does not
return a pair with ``has_aux=True`` is a ``ValueError``, one that returns a tuple with
``has_aux=False`` a ``TypeError`` suggesting ``has_aux=True``, both at trace time.

``aux`` at the current params comes from the caller's own
``(loss, aux), grad = jax.value_and_grad(value_fn, has_aux=True)(params, ...)``, the evaluation
that gives the gradient the base optimizer needs: the tuners evaluate at the same params with
the same arguments, so their ``aux`` would be the same values (pass ``value=loss,
grad=grad`` to the linesearch, Polyak and hypergradient tuners and they skip their own
evaluation). The states do not keep ``aux``, by design: optax builds a state from
``init(params)`` alone, before any ``value_fn`` is seen, so an ``aux`` field could not have
its structure at ``init``, and a state whose structure changes at the first update breaks a
``lax.scan`` carry and compiles a jitted step twice. The trials of the linesearch and of
CDAT's ``max_rise`` check are at other points than ``params``; their ``aux`` is dropped (the
next step's evaluation gives ``aux`` at the new params).

>>> import jax, jax.numpy as jnp, optax
>>> import cdat_core as cc
>>> def loss(w, stats):  # the loss, and a counter and a running mean to carry
...     pred = jnp.tanh(w)
...     new = {"count": stats["count"] + 1, "mean": 0.9 * stats["mean"] + 0.1 * pred.mean()}
...     return jnp.sum((pred - 0.5) ** 2), new
>>> opt = cc.cdat(optax.sgd(1.0), sigma=1.0, has_aux=True)
>>> @jax.jit
... def step(w, stats, state):
...     (value, new_stats), grad = jax.value_and_grad(loss, has_aux=True)(w, stats)
...     updates, state = opt.update(grad, state, w, value_fn=loss, stats=stats)
...     return optax.apply_updates(w, updates), new_stats, state
>>> w, stats = jnp.zeros(3), {"count": jnp.asarray(0), "mean": jnp.asarray(0.0)}
>>> state = opt.init(w)
>>> for _ in range(20):
...     w, stats, state = step(w, stats, state)
>>> int(stats["count"]), bool(abs(loss(w, stats)[0]) < 1e-6)
(20, True)

``params`` are pytrees of real floating-point leaves. Python-float leaves work (they are taken
as weakly typed arrays); integer leaves raise a ``TypeError`` that names the leaf, in ``init``
and in ``update``. Wrapping a chain in ``optax.apply_if_finite`` keeps the base optimizer's
state clean through a window of NaN gradients (see the README).

One module per tuner, each with its state class right above its factory:

- :mod:`~cdat_core.transforms.cdat`: :func:`scale_by_cdat` and :func:`cdat` (eq 8);
- :mod:`~cdat_core.transforms.cdat_curvature`: CDAT's curvature estimators (``curvature=``);
- :mod:`~cdat_core.transforms.linesearch`: :func:`scale_by_linesearch` (eq 1, appendix C.3);
- :mod:`~cdat_core.transforms.polyak`: :func:`scale_by_polyak` (eq 14);
- :mod:`~cdat_core.transforms.hypergradient`: :func:`scale_by_hypergradient` (eq 15);
- :mod:`~cdat_core.transforms.sharpness`: :func:`scale_by_sharpness` (eq 16);
- ``_common`` (private): value_fn keyword filtering, the objective wrapper (which reduces a
  ``(loss, aux)`` output to the loss), argument checks and the exactly-zero scaled update.
"""

from cdat_core.transforms.cdat import ScaleByCdatState, cdat, scale_by_cdat
from cdat_core.transforms.cdat_curvature import (
    ExactCurvature,
    ForwardEdgeCurvature,
    GaussNewtonCurvature,
    LaggedCurvature,
    ParabolicCurvature,
)
from cdat_core.transforms.hypergradient import ScaleByHypergradientState, scale_by_hypergradient
from cdat_core.transforms.linesearch import ScaleByLinesearchState, scale_by_linesearch
from cdat_core.transforms.polyak import ScaleByPolyakState, scale_by_polyak
from cdat_core.transforms.sharpness import ScaleBySharpnessState, scale_by_sharpness

__all__ = [
    "ExactCurvature",
    "ForwardEdgeCurvature",
    "GaussNewtonCurvature",
    "LaggedCurvature",
    "ParabolicCurvature",
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
