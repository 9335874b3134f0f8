r"""Edge-of-stability diagnostics: the product :math:`\eta\lambda_{\max}` in one call.

The paper reads its findings off :math:`\eta_t \lambda_{\max}(\nabla^2 f(w_t))`: classical
tuners keep it just below 2, a constant learning rate drives it to 2, CDAT with
:math:`\sigma = 2` holds it at or slightly above 2 (Roulet et al., 2024, Sections 2-3). For
adaptive optimizers the relevant sharpness is that of the preconditioned Hessian
:math:`P^{-1/2} \nabla^2 f(w) P^{-1/2}` (Appendix B.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cdat_core.sharpness import hessian_sharpness, preconditioner_from_optax_state

__all__ = ["EdgeOfStability", "edge_of_stability"]

PyTree = Any


class EdgeOfStability(NamedTuple):
    r"""What :func:`edge_of_stability` measured.

    Attributes:
      product: :math:`\eta \lambda_{\max}`, 2 at the edge of stability.
      learning_rate: :math:`\eta`.
      sharpness: :math:`\lambda_{\max}` of the (preconditioned) Hessian.
      eigenvector: its eigenvector, like ``params`` with a leading axis of size 1; pass it
        back as ``v0`` to track :math:`\lambda_{\max}` along training for a few products.
      converged: whether the eigensolver met its tolerance.
      preconditioned: whether the Hessian was preconditioned (an ``nu`` was found).
    """

    product: jax.Array
    learning_rate: jax.Array
    sharpness: jax.Array
    eigenvector: PyTree
    converged: jax.Array
    preconditioned: bool


def _has_second_moment(opt_state: Any) -> bool:
    return bool(optax.tree.get_all_with_path(opt_state, "nu"))


def edge_of_stability(
    fun: Callable[..., Any],
    params: PyTree,
    *args: Any,
    opt_state: Any = None,
    learning_rate: Any = None,
    key: jax.Array | None = None,
    v0: PyTree | None = None,
    method: str = "lanczos",
    num_iters: int = 20,
    eps: Any = 1e-8,
    b2: Any = None,
    eps_in_sqrt: bool = False,
) -> EdgeOfStability:
    r"""The edge-of-stability product :math:`\eta\lambda_{\max}` at ``params``.

    :math:`\lambda_{\max}` comes from :func:`cdat_core.hessian_sharpness` of ``fun`` at
    ``params``. When ``opt_state`` holds a second moment ``nu`` (optax's Adam, AdamW,
    RMSProp), the Hessian is preconditioned by
    :math:`P = \sqrt{\hat\nu} + \varepsilon` (:func:`cdat_core.preconditioner_from_optax_state`
    with ``eps``, ``b2`` and ``eps_in_sqrt``: pass Adam's ``b2`` for its bias correction).
    :math:`\eta` is ``learning_rate`` when given, else the unique ``learning_rate`` field of
    ``opt_state`` (the state of any cdat_core tuner, or of ``optax.inject_hyperparams``).

    Args:
      fun: the objective ``fun(params, *args)``.
      params: :math:`w`.
      *args: extra arguments of ``fun``.
      opt_state: the optimizer state (for :math:`\eta` and :math:`P`), or ``None``.
      learning_rate: :math:`\eta`, overriding the one in ``opt_state``.
      key: PRNG key of the random start (needed unless ``v0`` is given).
      v0: warm start, e.g. the previous result's ``eigenvector``.
      method: ``"lanczos"`` or ``"power"``.
      num_iters: the number of Hessian-vector products at most.
      eps: :math:`\varepsilon` of the adaptive optimizer.
      b2: :math:`\beta_2` for Adam's bias correction (``None``: none, as RMSProp).
      eps_in_sqrt: whether the optimizer puts :math:`\varepsilon` inside the square root.

    Returns:
      :class:`EdgeOfStability`.

    Example:
      Gradient descent at :math:`\eta = 0.5` on a quadratic of sharpness 4 is at
      :math:`\eta\lambda_{\max} = 2`:

      >>> import jax, jax.numpy as jnp
      >>> import cdat_core as cc
      >>> f = lambda w: 0.5 * (4.0 * w[0] ** 2 + w[1] ** 2)
      >>> eos = cc.edge_of_stability(f, jnp.ones(2), learning_rate=0.5, key=jax.random.key(0))
      >>> round(float(eos.product), 4), eos.preconditioned
      (2.0, False)
    """
    if learning_rate is None:
        if opt_state is None:
            raise TypeError("edge_of_stability needs learning_rate= or an opt_state holding one.")
        learning_rate = optax.tree.get(opt_state, "learning_rate")
    preconditioned = opt_state is not None and _has_second_moment(opt_state)
    preconditioner = (
        preconditioner_from_optax_state(opt_state, eps=eps, b2=b2, eps_in_sqrt=eps_in_sqrt)
        if preconditioned
        else None
    )
    result = hessian_sharpness(
        fun,
        params,
        *args,
        key=key,
        v0=v0,
        method=method,
        num_iters=num_iters,
        preconditioner=preconditioner,
    )
    sharpness = result.eigenvalues[0]
    learning_rate = jnp.asarray(learning_rate).astype(sharpness.dtype)
    return EdgeOfStability(
        product=learning_rate * sharpness,
        learning_rate=learning_rate,
        sharpness=sharpness,
        eigenvector=result.eigenvectors,
        converged=result.converged,
        preconditioned=preconditioned,
    )
