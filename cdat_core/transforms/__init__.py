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

``params`` are pytrees of real floating-point leaves. Python-float leaves work (they are taken
as weakly typed arrays); integer leaves raise a ``TypeError`` that names the leaf, in ``init``
and in ``update``. Wrapping a chain in ``optax.apply_if_finite`` keeps the base optimizer's
state clean through a window of NaN gradients (see the README).

One module per tuner, each with its state class right above its factory:

- :mod:`~cdat_core.transforms.cdat`: :func:`scale_by_cdat` and :func:`cdat` (eq 8);
- :mod:`~cdat_core.transforms.linesearch`: :func:`scale_by_linesearch` (eq 1, appendix C.3);
- :mod:`~cdat_core.transforms.polyak`: :func:`scale_by_polyak` (eq 14);
- :mod:`~cdat_core.transforms.hypergradient`: :func:`scale_by_hypergradient` (eq 15);
- :mod:`~cdat_core.transforms.sharpness`: :func:`scale_by_sharpness` (eq 16);
- ``_common`` (private): value_fn keyword filtering, the objective wrapper, argument checks
  and the exactly-zero scaled update.
"""

from cdat_core.transforms.cdat import ScaleByCdatState, cdat, scale_by_cdat
from cdat_core.transforms.hypergradient import ScaleByHypergradientState, scale_by_hypergradient
from cdat_core.transforms.linesearch import ScaleByLinesearchState, scale_by_linesearch
from cdat_core.transforms.polyak import ScaleByPolyakState, scale_by_polyak
from cdat_core.transforms.sharpness import ScaleBySharpnessState, scale_by_sharpness

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
