r"""The exact-sharpness learning rate :math:`\sigma/\lambda_{\max}`, eq (16) of Roulet et al.

:class:`ScaleBySharpnessState` and :func:`scale_by_sharpness`, built on
:func:`cdat_core.hessian_sharpness`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core import _tree
from cdat_core.rules import sharpness_learning_rate
from cdat_core.sharpness import hessian_sharpness
from cdat_core.transforms._common import (
    PyTree,
    _all_finite,
    _check_has_aux,
    _check_hyperparameter,
    _check_params,
    _objective,
    _scalar_dtype,
    _scaled,
)

__all__ = ["ScaleBySharpnessState", "scale_by_sharpness"]


class ScaleBySharpnessState(NamedTuple):
    r"""State of :func:`scale_by_sharpness`.

    Attributes:
      learning_rate: the learning rate of the last update.
      sharpness: :math:`\lambda_{\max}` estimated at the last update.
      eigenvector: the estimated top eigenvector (like params, sharded like them), the warm
        start of the next estimate.
      converged: whether the last eigensolve met its tolerance.
      finite: whether the last update's sharpness, value, gradient, Hessian-vector check,
        direction, params and hyperparameters were finite (when not, the update was exactly
        zero, ``learning_rate`` records 0 and ``eigenvector`` was kept).
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
    has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the direction by the exact-sharpness rule, eq (16) of the paper.

    .. math:: \eta_t = \sigma / \lambda_{\max}(\nabla^2 f(w_t)),

    with :math:`\lambda_{\max}` from :func:`cdat_core.hessian_sharpness` on ``value_fn``,
    warm-started from the previous eigenvector (the first start is drawn from ``key``), so
    tracking it costs ``num_iters`` Hessian-vector products per update, plus one that checks
    the answer: :math:`f(w)`, :math:`\nabla f(w)` and :math:`\nabla^2 f(w) v` at the new
    eigenvector :math:`v`, from one forward-over-reverse pass. The paper (Fig. 15)
    finds the rule works only for :math:`\sigma \approx 3`, unlike CDAT at
    :math:`\sigma \approx 2`. Defined values follow
    :func:`cdat_core.sharpness_learning_rate`.

    *Bad input.* An eigensolver cannot tell a NaN Hessian from a zero one (both give
    :math:`\lambda_{\max} = 0`, which would read as "no curvature" and take a
    ``max_learning_rate`` step), so the check above decides: a non-finite value, gradient,
    Hessian-vector product, eigenvalue, direction or param gives :math:`\eta_t = 0` and an
    exactly zero update, recorded as ``finite=False``. Concrete hyperparameters (Python numbers,
    or arrays outside ``jit``) are checked here (``ValueError`` naming the argument); traced
    ones are sanitised at each step: a negative ``sigma`` or ``max_learning_rate`` gives
    :math:`\eta_t = 0`, a NaN or infinite one (``max_learning_rate`` may be ``+inf``) a zero
    update with ``finite=False``.

    Args:
      sigma: :math:`\sigma \ge 0`.
      max_learning_rate: upper bound on :math:`\eta_t \ge 0` (``inf`` allowed).
      method: ``"lanczos"`` or ``"power"`` (structural).
      num_iters: Hessian-vector products per update at most (structural).
      key: PRNG key of the first start vector (default ``jax.random.key(0)``).
      has_aux: a Python bool: whether ``value_fn`` returns ``(loss, aux)``; the
        Hessian-vector products use the loss and drop ``aux`` (see
        :mod:`cdat_core.transforms`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleBySharpnessState`.

    Raises:
      ValueError: a concrete hyperparameter out of range, or an unknown ``method``.
      TypeError: a ``num_iters`` that is not a Python int (under ``optax.inject_hyperparams``,
        name it in ``static_args``), or a ``has_aux`` that is not a bool.

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
    name = "scale_by_sharpness"
    has_aux = _check_has_aux(name, has_aux)
    _check_hyperparameter(name, "sigma", sigma)
    _check_hyperparameter(name, "max_learning_rate", max_learning_rate, allow_inf=True)
    if method not in ("lanczos", "power"):
        raise ValueError(f"{name}: method must be 'lanczos' or 'power', got {method!r}.")
    _tree.check_structural_int(num_iters, "num_iters")

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
        params, updates = _check_params(params, updates, name)
        fun = _objective(value_fn, extra_args, name, has_aux)
        dtype = state.learning_rate.dtype
        result = hessian_sharpness(
            fun, params, v0=state.eigenvector, method=method, num_iters=num_iters
        )
        sharpness = result.eigenvalues[0].astype(dtype)
        found = _tree.cast_like(jax.tree.map(lambda v: v[0], result.eigenvectors), params)
        found_ok = _tree.all_finite(found) & (_tree.sq_norm(found) > 0)
        probe = _tree.where(found_ok, found, state.eigenvector)
        # One forward-over-reverse pass: f(w), ∇f(w) and ∇²f(w)v, to tell a NaN Hessian
        # (which the eigensolver reports as λ = 0) from a zero one.
        (value, grad), (_, hessian_probe) = jax.jvp(jax.value_and_grad(fun), (params,), (probe,))
        sigma_, max_lr = (jnp.asarray(x).astype(dtype) for x in (sigma, max_learning_rate))
        finite = _all_finite(sharpness, value, grad, hessian_probe, updates, params, sigma_)
        finite = finite & ~jnp.isnan(max_lr)
        learning_rate = sharpness_learning_rate(
            sharpness, sigma=sigma_, max_learning_rate=max_lr
        ).astype(dtype)
        learning_rate = jnp.where(finite, learning_rate, 0.0)
        eigenvector = _tree.where(finite & found_ok, found, state.eigenvector)
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
