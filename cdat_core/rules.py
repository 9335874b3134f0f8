r"""Pure learning-rate rules: scalars in, a scalar learning rate out.

Every rule here is a pure function, safe under ``jit``, ``vmap`` and ``grad``. None of them
returns NaN: non-finite inputs, ascent directions and vanishing curvature map to the defined
values documented on each rule, and every division is guarded with a double ``where`` so the
gradients with respect to the inputs stay finite at those points too.

Notation (Roulet et al., 2024, "Stepping on the Edge"): :math:`f` the objective, :math:`w`
the parameters, :math:`u` the update direction of the base optimizer (:math:`u = -\nabla f(w)`
for gradient descent), :math:`H = \nabla^2 f(w)` and :math:`\lambda_{\max}` its top eigenvalue.
The *slope* is :math:`\nabla f(w)^\top u` and the *curvature* is :math:`u^\top H u`.

Learning rates are computed and returned in at least float32 (the promotion of the input
dtypes with float32); numeric hyperparameters (``sigma``, ``eps``, ...) may be Python floats
or traced arrays, so changing them never recompiles.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from cdat_core import _tree

__all__ = [
    "cdat_learning_rate",
    "ema",
    "greedy_learning_rate",
    "hypergradient_learning_rate",
    "on_edge_learning_rate",
    "polyak_learning_rate",
    "sharpness_learning_rate",
]

ArrayLike = Any


def _as_scalars(*xs: ArrayLike, like: tuple[ArrayLike, ...]) -> tuple[jax.Array, ...]:
    """Cast ``xs`` to the accumulation dtype of the arrays in ``like`` (at least float32)."""
    dtype = _tree.accumulation_dtype(*(jnp.result_type(x) for x in like if hasattr(x, "dtype")))
    return tuple(jnp.asarray(x).astype(dtype) for x in xs)


def _finite(*xs: jax.Array) -> jax.Array:
    out = jnp.asarray(True)
    for x in xs:
        out = out & jnp.isfinite(x)
    return out


def _clip_ratio(numerator: jax.Array, denominator: jax.Array, max_learning_rate: jax.Array):
    """Return ``min(numerator / denominator, max)`` with the conventions of the rules.

    ``numerator`` and ``denominator`` are non-negative, finite or ``+inf`` when forming them
    from finite inputs overflowed (``σ·|slope|``, ``|curvature| + ε``, ``f(w) - f*`` near
    ``finfo.max``). A zero numerator or an infinite denominator gives 0. A denominator below
    the smallest normal number, or a quotient above ``finfo.max**0.25`` (about 1e9 in float32,
    1e77 in float64; an infinite numerator counts as one), counts as "no curvature": with a
    positive numerator it gives ``max_learning_rate`` when that is finite, else 0.

    The division is done on operands scaled by ``s = max(numerator, denominator)`` (clipped to
    ``[tiny, finfo.max]``, held constant for differentiation), so ``y = denominator / s`` lies
    in ``[finfo.max**-0.25, 1]`` and neither the quotient nor its derivatives overflow or
    underflow to NaN; every ``where`` has finite operands on both sides, so gradients are
    never NaN (and finite wherever the exact derivative is below ``finfo.max``).
    """
    finfo = jnp.finfo(numerator.dtype)
    biggest = jnp.asarray(finfo.max, numerator.dtype)
    limit = biggest**0.25
    tiny = jnp.asarray(finfo.tiny, numerator.dtype)
    overflowed = (numerator > biggest) | (denominator > biggest)
    divisible = (denominator >= tiny) & (numerator <= denominator * limit) & ~overflowed
    scale = jax.lax.stop_gradient(jnp.clip(jnp.maximum(numerator, denominator), tiny, biggest))
    x = jnp.where(divisible, numerator, 0.0) / scale
    y = jnp.where(divisible, denominator, scale) / scale
    # Under jit XLA rewrites (n / s) / (d / s) as (n * s) / (s * d), whose products overflow
    # or underflow to NaN beyond ~1e±154 (~1e±19 in float32); the barrier keeps the scaling.
    x, y = jax.lax.optimization_barrier((x, y))
    ratio = x / y
    capped = jnp.isfinite(max_learning_rate)
    safe_max = jnp.where(capped, max_learning_rate, 0.0)
    # No curvature to bound the step: the cap if there is one, else no step.
    ratio = jnp.where(divisible, ratio, safe_max)
    ratio = jnp.where(capped, jnp.minimum(ratio, safe_max), ratio)
    positive = (numerator > 0) & (denominator <= biggest)
    return jnp.where(positive, jnp.maximum(ratio, 0.0), 0.0)


def cdat_learning_rate(
    slope: ArrayLike,
    curvature: ArrayLike,
    *,
    sigma: ArrayLike = 2.0,
    eps: ArrayLike = 0.0,
    max_learning_rate: ArrayLike = float("inf"),
) -> jax.Array:
    r"""Curvature-dynamics-aware tuning (CDAT), eq (8) of Roulet et al. (2024).

    .. math::

        \eta = \sigma \, \frac{n}{d}, \qquad n = \max(-\nabla f(w)^\top u, 0), \qquad
        d = |u^\top \nabla^2 f(w) u| + \varepsilon.

    :math:`\sigma = 1` is the quadratically greedy rule (eq 3), :math:`\sigma = 2` the on-edge
    rule (eq 7); the paper uses :math:`\varepsilon = 0`.

    Args:
      slope: :math:`\nabla f(w)^\top u`, a scalar.
      curvature: :math:`u^\top \nabla^2 f(w) u`, a scalar (its absolute value is used, so a
        negative curvature still gives a finite, positive step).
      sigma: the scaling :math:`\sigma \ge 0`; the learning rate is linear in it.
      eps: :math:`\varepsilon \ge 0` added to the denominator.
      max_learning_rate: upper bound on the result (``inf``: no bound).

    Returns:
      The learning rate, a scalar in :math:`[0, \text{max\_learning\_rate}]`, with these
      defined values: a non-finite input gives 0; an ascent or flat direction (slope
      :math:`\ge 0`) gives 0; a zero denominator with a positive numerator gives
      ``max_learning_rate`` if it is finite, else 0 (no curvature, no step). A denominator
      below the smallest normal float, or a quotient above ``finfo.max**0.25`` (about 1e9 in
      float32, 1e77 in float64), counts as a zero denominator: such steps are beyond anything
      meaningful and would overflow the gradients. So does a numerator
      :math:`\sigma|\nabla f(w)^\top u|` that overflows; a denominator that overflows gives 0.

    Example:
      On :math:`f(w) = \tfrac{\lambda}{2} w^2` with :math:`u = -f'(w)`, the on-edge step is
      :math:`2/\lambda`:

      >>> import cdat_core as cc
      >>> lam, w = 4.0, 1.5
      >>> u = -lam * w
      >>> float(cc.cdat_learning_rate(lam * w * u, lam * u * u, sigma=2.0))
      0.5
      >>> float(cc.cdat_learning_rate(+1.0, 2.0))  # ascent direction: no step
      0.0

    """
    slope, curvature, sigma, eps, max_lr = _as_scalars(
        slope, curvature, sigma, eps, max_learning_rate, like=(slope, curvature)
    )
    finite = _finite(slope, curvature, sigma, eps) & ~jnp.isnan(max_lr)
    safe_slope = jnp.where(finite, slope, 0.0)
    safe_curvature = jnp.where(finite, curvature, 0.0)
    numerator = jnp.maximum(-safe_slope, 0.0) * jnp.where(finite, jnp.maximum(sigma, 0.0), 0.0)
    denominator = jnp.abs(safe_curvature) + jnp.where(finite, jnp.maximum(eps, 0.0), 0.0)
    return jnp.where(finite, _clip_ratio(numerator, denominator, max_lr), 0.0)


def greedy_learning_rate(slope: ArrayLike, curvature: ArrayLike, **kwargs: Any) -> jax.Array:
    r"""Quadratically greedy learning rate, eq (3): CDAT with :math:`\sigma = 1`.

    .. math:: \eta_{qg} = \frac{-\nabla f(w)^\top u}{u^\top \nabla^2 f(w) u},

    the minimiser of the quadratic model
    :math:`q(\eta) = f(w) + \eta \nabla f(w)^\top u + \tfrac12 \eta^2 u^\top H u` when
    :math:`u^\top H u > 0`. Keyword arguments (``eps``, ``max_learning_rate``) and the defined
    values at bad input are those of :func:`cdat_learning_rate`.

    Example:
      >>> import cdat_core as cc
      >>> float(cc.greedy_learning_rate(-6.0, 12.0))
      0.5

    """
    if "sigma" in kwargs:
        raise TypeError("greedy_learning_rate fixes sigma=1; use cdat_learning_rate instead.")
    return cdat_learning_rate(slope, curvature, sigma=1.0, **kwargs)


def on_edge_learning_rate(slope: ArrayLike, curvature: ArrayLike, **kwargs: Any) -> jax.Array:
    r"""On-edge learning rate, eq (7): CDAT with :math:`\sigma = 2`.

    .. math::

        \eta_{oe} = \max\{\eta \ge 0 : q(\eta) \le f(w)\}
                  = \frac{-2 \nabla f(w)^\top u}{u^\top \nabla^2 f(w) u},

    the largest step that leaves the quadratic model at :math:`f(w)`. With
    :math:`u = -\nabla f(w)` aligned with the top eigenvector of :math:`H` it equals
    :math:`2/\lambda_{\max}`, the edge of stability. Keyword arguments and defined values are
    those of :func:`cdat_learning_rate`.

    Example:
      >>> import cdat_core as cc
      >>> float(cc.on_edge_learning_rate(-6.0, 12.0))
      1.0

    """
    if "sigma" in kwargs:
        raise TypeError("on_edge_learning_rate fixes sigma=2; use cdat_learning_rate instead.")
    return cdat_learning_rate(slope, curvature, sigma=2.0, **kwargs)


def sharpness_learning_rate(
    sharpness: ArrayLike,
    *,
    sigma: ArrayLike = 2.0,
    max_learning_rate: ArrayLike = float("inf"),
) -> jax.Array:
    r"""Exact-sharpness rule, eq (16): :math:`\eta = \sigma / \lambda_{\max}(\nabla^2 f(w))`.

    The paper (Fig. 15) finds it works only for :math:`\sigma \approx 3`, unlike CDAT at
    :math:`\sigma \approx 2`.

    Args:
      sharpness: :math:`\lambda_{\max}` (its absolute value is used).
      sigma: the scaling :math:`\sigma \ge 0`.
      max_learning_rate: upper bound on the result.

    Returns:
      The learning rate in :math:`[0, \text{max\_learning\_rate}]`; a non-finite input gives 0,
      a zero sharpness gives ``max_learning_rate`` if finite, else 0.

    Example:
      >>> import cdat_core as cc
      >>> float(cc.sharpness_learning_rate(8.0))
      0.25

    """
    sharpness, sigma, max_lr = _as_scalars(sharpness, sigma, max_learning_rate, like=(sharpness,))
    finite = _finite(sharpness, sigma) & ~jnp.isnan(max_lr)
    numerator = jnp.where(finite, jnp.maximum(sigma, 0.0), 0.0)
    denominator = jnp.abs(jnp.where(finite, sharpness, 0.0))
    return jnp.where(finite, _clip_ratio(numerator, denominator, max_lr), 0.0)


def polyak_learning_rate(
    value: ArrayLike,
    grad_sq_norm: ArrayLike,
    *,
    f_star: ArrayLike = 0.0,
    max_learning_rate: ArrayLike = 1.0,
    eps: ArrayLike = 0.0,
) -> jax.Array:
    r"""Polyak step size, eq (14).

    .. math::

        \eta = \min\left\{\frac{\max(f(w) - f^\star, 0)}{\|\nabla f(w)\|^2 + \varepsilon},
        \eta_{\max}\right\},

    with :math:`f^\star` a lower bound on the objective (0 for non-negative losses, as in the
    paper) and :math:`\eta_{\max} \in \{1, 100\}` in the paper's grids. The gap is clipped at
    0, so a value below :math:`f^\star` gives 0 rather than an ascent step.

    Args:
      value: :math:`f(w)`.
      grad_sq_norm: :math:`\|\nabla f(w)\|^2`.
      f_star: :math:`f^\star`.
      max_learning_rate: :math:`\eta_{\max}`.
      eps: :math:`\varepsilon \ge 0` added to the denominator.

    Returns:
      The learning rate in :math:`[0, \eta_{\max}]`; a non-finite input gives 0; a zero
      gradient with a positive gap gives :math:`\eta_{\max}` if finite, else 0.

    Example:
      >>> import cdat_core as cc
      >>> float(cc.polyak_learning_rate(2.0, 8.0))
      0.25
      >>> float(cc.polyak_learning_rate(2.0, 0.5, max_learning_rate=1.0))
      1.0

    """
    value, grad_sq_norm, f_star, max_lr, eps = _as_scalars(
        value, grad_sq_norm, f_star, max_learning_rate, eps, like=(value, grad_sq_norm)
    )
    finite = _finite(value, grad_sq_norm, f_star, eps) & ~jnp.isnan(max_lr)
    gap = jnp.maximum(jnp.where(finite, value - f_star, 0.0), 0.0)
    denominator = jnp.abs(jnp.where(finite, grad_sq_norm, 0.0)) + jnp.where(
        finite, jnp.maximum(eps, 0.0), 0.0
    )
    return jnp.where(finite, _clip_ratio(gap, denominator, max_lr), 0.0)


def hypergradient_learning_rate(
    learning_rate: ArrayLike,
    next_grad: Any,
    direction: Any,
    *,
    beta: ArrayLike,
) -> jax.Array:
    r"""Hyper-gradient descent on the learning rate, eq (15).

    .. math::

        \eta_{t+1} = \eta_t \left(1 - \beta \,
            \frac{\nabla f(w_t + \eta_t u_t)^\top u_t}
                 {\|\nabla f(w_t + \eta_t u_t)\| \, \|u_t\|}\right),

    a multiplicative step on :math:`\eta` along the normalised hyper-gradient
    :math:`\partial f(w + \eta u)/\partial \eta`. When the next gradient still descends along
    :math:`u` (negative cosine) the learning rate grows; when it has turned against :math:`u`
    it shrinks. The paper's grid is :math:`\beta \in [10^{-3}, 1]`.

    Args:
      learning_rate: :math:`\eta_t \ge 0`.
      next_grad: :math:`\nabla f(w_t + \eta_t u_t)`, a pytree like ``direction``.
      direction: :math:`u_t`.
      beta: the hyper learning rate :math:`\beta`.

    Returns:
      :math:`\eta_{t+1} \ge 0`. A zero gradient or zero direction leaves :math:`\eta`
      unchanged (cosine 0); a non-finite next gradient (the trial step overshot) counts as a
      cosine of +1, i.e. :math:`\eta_{t+1} = \eta_t (1 - \beta)`; a non-finite
      ``learning_rate`` or ``beta`` gives 0.

    Example:
      >>> import jax.numpy as jnp
      >>> import cdat_core as cc
      >>> u = jnp.array([1.0, 0.0])
      >>> float(cc.hypergradient_learning_rate(0.1, -u, u, beta=0.5))  # still descending
      0.15...
      >>> float(cc.hypergradient_learning_rate(0.1, u, u, beta=0.5))  # overshot
      0.05...

    """
    _tree.check_same_structure(direction, next_grad, "direction", "next_grad")
    # Non-finite vectors are zeroed before any product, so gradients stay finite too.
    grad_finite = _tree.all_finite(next_grad) & _tree.all_finite(direction)
    next_grad = _tree.where(grad_finite, next_grad, _tree.zeros_like(next_grad))
    direction = _tree.where(grad_finite, direction, _tree.zeros_like(direction))
    inner = _tree.vdot(next_grad, direction)
    norms = _tree.norm(next_grad) * _tree.norm(direction)
    learning_rate, beta, inner, norms = _as_scalars(
        learning_rate, beta, inner, norms, like=(learning_rate, inner)
    )
    grad_finite = grad_finite & _finite(inner, norms)
    divisible = grad_finite & (norms > 0)
    cosine = jnp.where(divisible, inner, 0.0) / jnp.where(divisible, norms, 1.0)
    cosine = jnp.where(grad_finite, jnp.clip(cosine, -1.0, 1.0), 1.0)
    finite = _finite(learning_rate, beta)
    new = jnp.where(finite, learning_rate, 0.0) * (1.0 - jnp.where(finite, beta, 0.0) * cosine)
    return jnp.where(finite, jnp.maximum(new, 0.0), 0.0)


def ema(average: Any, value: Any, decay: ArrayLike) -> Any:
    r"""Exponential moving average, the paper's :math:`\beta_{cdat}` smoothing of eq (8).

    .. math:: \tilde a_{t+1} = (1 - \beta)\, a_t + \beta\, \tilde a_t,

    with ``average`` :math:`\tilde a_t`, ``value`` :math:`a_t` and ``decay`` :math:`\beta`
    (:math:`\beta = 0` returns ``value``). Works leafwise on matching pytrees; each leaf keeps
    the dtype of ``value``.

    Example:
      >>> import cdat_core as cc
      >>> float(cc.ema(1.0, 3.0, 0.9))
      1.2...

    """

    def leaf(a: Any, v: Any) -> jax.Array:
        v = jnp.asarray(v)
        dtype = _tree.accumulation_dtype(v.dtype)
        d = jnp.asarray(decay).astype(dtype)
        return ((1 - d) * v.astype(dtype) + d * jnp.asarray(a).astype(dtype)).astype(v.dtype)

    return jax.tree.map(leaf, average, value)
