r"""Hessian spectrum: spectral density by stochastic Lanczos quadrature, and shared helpers.

Notation: :math:`H = \nabla^2 f(w)` the Hessian of ``fun`` at ``params`` (or, with a
``preconditioner`` :math:`P`, the preconditioned :math:`\tilde H = P^{-1/2} H P^{-1/2}` of
:func:`cdat_core.hessian_sharpness`), of dimension :math:`n` (the number of entries of
``params``), applied only through Hessian-vector products (:func:`cdat_core.hvp`, one
forward-over-reverse pass each: the *matvecs* every cost below is counted in). Probes
:math:`v` are Rademacher vectors (entries :math:`\pm 1`, :math:`\mathbb E[v v^\top] = I`),
drawn from the explicit ``key``, one split key per probe and per leaf, sharded like
``params``.

- :func:`hessian_spectral_density`: stochastic Lanczos quadrature (SLQ; Golub and Meurant,
  1994; Ubaru, Chen and Saad, 2017; Ghorbani, Krishnan and Xiao, 2019): per probe, the Gauss
  quadrature nodes and weights of the Lanczos tridiagonal, and their average smoothed by a
  Gaussian kernel on a grid.

The other spectral tools share this module's probes, operator and argument checks:
:mod:`cdat_core.spectrum_trace` (Hutchinson trace and diagonal, Hutch++) and
:mod:`cdat_core.spectrum_blocks` (sharpness of a block of parameters, Gauss-Newton
sharpness, alignment of an update with the top eigenvector).

Every entry point checks its arguments at trace time (errors name the argument), takes its
structural settings (``num_probes``, ``num_steps``, ``num_points``, ``method``) as Python
values bound at trace time and everything else traced, so it compiles once per structure.
Probes run one after the other (``lax.map``/``lax.scan``): memory is that of one product
(plus the Lanczos basis for SLQ), not one per probe. Results are in the accumulation dtype of
``params`` (at least float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cdat_core import _tree
from cdat_core.curvature import hvp
from cdat_core.eig import _check_start, _lanczos_tridiagonal, _scalar_dtype
from cdat_core.sharpness import _inverse_sqrt

__all__ = ["SpectralDensity", "hessian_spectral_density"]

PyTree = Any
Matvec = Callable[[PyTree], PyTree]

#: Default kernel width of the smoothed density, relative to the spread of the nodes.
RELATIVE_KERNEL_WIDTH = 0.01


# --------------------------------------------------------------------------------------------
# Shared pieces: argument checks, probes, the (preconditioned) Hessian operator.
# --------------------------------------------------------------------------------------------


def _check_key(key: Any, owner: str) -> None:
    """Raise ``TypeError`` unless ``key`` is a PRNG key (new-style or legacy ``uint32[2]``)."""
    if key is None:
        raise TypeError(f"{owner} needs key= (e.g. jax.random.key(0)) to draw its probes.")
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if np.shape(key) != ():
            raise TypeError(f"key must be a single PRNG key, got shape {np.shape(key)}.")
        return
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.ndim(key) == 1:
        return  # a legacy raw key, e.g. jax.random.PRNGKey(0)
    raise TypeError(
        f"key must be a PRNG key such as jax.random.key(0), got {type(key).__name__}"
        + (f" of dtype {dtype}" if dtype is not None else "")
        + "."
    )


def _rademacher_like(key: jax.Array, tree: PyTree) -> PyTree:
    """Rademacher (±1) pytree like ``tree``: one split key per leaf, sharded like each leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, leaf in zip(keys, leaves, strict=True):
        sharding = _tree.explicit_sharding(leaf) if isinstance(leaf, jax.core.Tracer) else None
        signs = jax.random.rademacher(k, np.shape(leaf), jnp.int32, out_sharding=sharding)
        out.append(signs.astype(jnp.result_type(leaf)))
    return jax.tree.unflatten(treedef, out)


def _hessian_operator(
    fun: Callable[..., Any], params: PyTree, args: tuple[Any, ...], preconditioner: PyTree
) -> tuple[Matvec, int]:
    r"""``(matvec, n)``: :math:`v \mapsto Hv`, or :math:`\tilde H v` with a preconditioner."""
    n = _check_start(params, "params")
    _tree.check_scalar_output(jax.eval_shape(lambda w: fun(w, *args), params))
    scaling = None if preconditioner is None else _inverse_sqrt(preconditioner, params)

    def matvec(v: PyTree) -> PyTree:
        if scaling is None:
            return hvp(fun, params, v, *args)
        hv = hvp(fun, params, jax.tree.map(jnp.multiply, scaling, v), *args)
        return jax.tree.map(jnp.multiply, scaling, hv)

    return matvec, n


def _check_probes(num_probes: Any, minimum: int, why: str) -> int:
    num_probes = _tree.check_structural_int(num_probes, "num_probes")
    if num_probes < minimum:
        raise ValueError(f"num_probes must be at least {minimum} {why}, got {num_probes}.")
    return num_probes


# --------------------------------------------------------------------------------------------
# Spectral density
# --------------------------------------------------------------------------------------------


class SpectralDensity(NamedTuple):
    r"""A smoothed spectral density of the Hessian and the quadrature behind it.

    Attributes:
      density: ``(num_points,)`` the smoothed density :math:`\phi_\sigma` on ``grid``.
      grid: ``(num_points,)`` the points :math:`t` where it is evaluated, increasing.
      nodes: ``(num_probes, m)`` Gauss quadrature nodes :math:`\theta_{lj}` (Ritz values).
      weights: ``(num_probes, m)`` their weights :math:`\tau_{lj} \ge 0`, each row summing
        to 1 (0 for nodes past a breakdown, and for a probe whose first product failed).
      kernel_width: the standard deviation :math:`\sigma` of the Gaussian kernel.
      num_nodes: ``(num_probes,)`` the number of nodes with weight, per probe: ``m`` unless
        the Krylov space of the probe was invariant sooner (then the quadrature is exact).
      num_matvecs: the number of Hessian-vector products made.
    """

    density: jax.Array
    grid: jax.Array
    nodes: jax.Array
    weights: jax.Array
    kernel_width: jax.Array
    num_nodes: jax.Array
    num_matvecs: jax.Array


def _gauss_quadrature(
    alphas: jax.Array, betas: jax.Array, size: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Nodes and weights of the Lanczos tridiagonal's first block (the probe's Krylov space).

    After a breakdown the tridiagonal is block diagonal and only its first block belongs to
    the Krylov space of the probe. Rows past that block are decoupled and given the value
    :math:`\alpha_0` (a Rayleigh quotient, so inside the hull of the nodes) with weight 0.
    """
    m = alphas.shape[0]
    idx = jnp.arange(m, dtype=jnp.int32)
    cut = (betas == 0) & (idx < size - 1)  # a breakdown inside the valid rows
    first = jnp.where(jnp.any(cut), jnp.argmax(cut).astype(jnp.int32) + 1, size)
    valid = idx < first
    diag = jnp.where(valid, alphas, alphas[0])
    off = jnp.where(idx < first - 1, betas, 0.0)[:-1]
    tri = jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)
    nodes, vectors = jnp.linalg.eigh(tri)
    weights = jnp.where(first > 0, vectors[0] ** 2, 0.0)
    return nodes, weights, first


def _default_width(lo: jax.Array, hi: jax.Array) -> jax.Array:
    spread = hi - lo
    size = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    scale = jnp.where(spread > 0, spread, jnp.where(size > 0, size, 1.0))
    return RELATIVE_KERNEL_WIDTH * scale


def hessian_spectral_density(
    fun: Callable[..., Any],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    num_probes: int = 8,
    num_steps: int = 32,
    preconditioner: PyTree | None = None,
    kernel_width: Any = None,
    grid: Any = None,
    num_points: int = 512,
) -> SpectralDensity:
    r"""Spectral density of the (preconditioned) Hessian by stochastic Lanczos quadrature.

    The spectral density of :math:`H` (eigenvalues :math:`\lambda_i`) is
    :math:`\phi(t) = \frac1n \sum_i \delta(t - \lambda_i)`. For a probe :math:`v`,
    :math:`m` Lanczos steps from :math:`v` (full reorthogonalization) give a tridiagonal
    :math:`T_m = Y \mathrm{diag}(\theta) Y^\top` whose eigenvalues :math:`\theta_j` and
    weights :math:`\tau_j = Y_{0j}^2` are the :math:`m`-point Gauss quadrature of the measure
    :math:`\sum_i (q_i^\top \hat v)^2 \delta(t - \lambda_i)`, :math:`\hat v = v / \|v\|`:
    :math:`\sum_j \tau_j g(\theta_j) = \hat v^\top g(H) \hat v` exactly for every polynomial
    :math:`g` of degree :math:`\le 2m - 1`. With Rademacher probes
    :math:`\mathbb E[\hat v^\top g(H) \hat v] = \mathrm{tr}\, g(H) / n`, so the average over
    ``num_probes`` probes of these discrete measures estimates :math:`\phi`; in particular its
    :math:`k`-th moment :math:`\frac1L \sum_{l,j} \tau_{lj} \theta_{lj}^k` is an unbiased
    estimate of :math:`\mathrm{tr}(H^k)/n` for :math:`k \le 2m - 1` (exact for a diagonal
    :math:`H`, where :math:`\hat v^\top H^k \hat v = \mathrm{tr}(H^k)/n` for every sign
    vector). The returned density is that average smoothed by a Gaussian kernel,

    .. math::

        \phi_\sigma(t) = \frac1L \sum_{l=1}^{L} \sum_{j=1}^{m} \tau_{lj}
        \frac{1}{\sigma\sqrt{2\pi}} \exp\Big(-\frac{(t - \theta_{lj})^2}{2\sigma^2}\Big),

    a probability density on the real line (integral 1; mean equal to the quadrature's mean,
    variance the quadrature's plus :math:`\sigma^2`). With ``preconditioner`` the operator is
    :math:`\tilde H = P^{-1/2} H P^{-1/2}` as in :func:`cdat_core.hessian_sharpness`.

    A breakdown (the probe's Krylov space is invariant after :math:`j < m` steps) keeps only
    the first :math:`j` nodes (then exact); a probe whose first product is non-finite gets
    zero weights and is left out of the average (a density of 0 if every probe failed).

    Cost: ``num_probes * min(num_steps, n)`` Hessian-vector products (``num_matvecs``), plus
    the reorthogonalization (:math:`O(m^2 n)` per probe), an :math:`m \times m` ``eigh`` per
    probe and ``num_points * num_probes * m`` kernel evaluations.

    Args:
      fun: ``fun(params, *args)`` returning a real scalar.
      params: :math:`w`, a pytree of float arrays.
      *args: data passed to ``fun``; not differentiated.
      key: PRNG key of the Rademacher probes (same key, same probes).
      num_probes: number of probes :math:`L` (static, at least 1).
      num_steps: Lanczos steps :math:`m` per probe (static; clamped to :math:`n`).
      preconditioner: the diagonal of :math:`P`, a pytree like ``params``, or ``None``.
      kernel_width: :math:`\sigma` (may be traced); ``None``, or a traced value that is not
        positive and finite, gives :math:`\sigma = 0.01\,(\theta_{\max} - \theta_{\min})`
        over all nodes (or 0.01 times the largest :math:`|\theta|` when they coincide, 0.01
        when all are 0).
      grid: 1-D array of points :math:`t`; ``None`` gives ``num_points`` equally spaced
        points from :math:`\theta_{\min} - 5\sigma` to :math:`\theta_{\max} + 5\sigma`.
      num_points: size of the default grid (static, at least 2; ignored with ``grid``).

    Returns:
      :class:`SpectralDensity`.

    Example:
      A quadratic with Hessian :math:`\mathrm{diag}(1, 1, 3, 5)`: the density has mass 1/2
      at 1 and 1/4 at 3 and 5, and its mean is :math:`\mathrm{tr}(H)/n = 2.5`.

      >>> import jax, jax.numpy as jnp
      >>> import cdat_core as cc
      >>> h = jnp.array([1.0, 1.0, 3.0, 5.0])
      >>> f = lambda w: 0.5 * jnp.sum(h * w**2)
      >>> out = cc.hessian_spectral_density(f, jnp.zeros(4), key=jax.random.key(0),
      ...                                   num_probes=4, num_steps=8)
      >>> int(out.num_matvecs), out.nodes.shape  # m = min(8, n = 4) steps per probe
      (16, (4, 4))
      >>> round(float(jnp.sum(out.weights * out.nodes) / 4), 4)  # mean over probes of Σ τθ
      2.5
      >>> dt = out.grid[1] - out.grid[0]
      >>> round(float(jnp.sum(out.density) * dt), 4)  # integrates to 1
      1.0
    """
    _check_key(key, "hessian_spectral_density")
    matvec, n = _hessian_operator(fun, params, args, preconditioner)
    num_probes = _check_probes(num_probes, 1, "")
    m = min(_tree.check_structural_int(num_steps, "num_steps"), n)
    num_points = _tree.check_structural_int(num_points, "num_points")
    dtype = _scalar_dtype(params)
    if grid is None and num_points < 2:
        raise ValueError(f"num_points must be at least 2, got {num_points}.")
    if grid is not None:
        if np.ndim(grid) != 1 or np.shape(grid)[0] < 1:
            raise ValueError(f"grid must be a 1-D array of points, got shape {np.shape(grid)}.")
        _tree.check_float_tree(grid, "grid")
    if kernel_width is not None and not isinstance(kernel_width, jax.core.Tracer):
        if np.ndim(kernel_width) != 0 or not float(kernel_width) > 0:  # NaN fails too
            raise ValueError(f"kernel_width must be a positive scalar, got {kernel_width!r}.")

    def one_probe(k: jax.Array) -> tuple[jax.Array, ...]:
        tri = _lanczos_tridiagonal(matvec, _rademacher_like(k, params), num_iters=m, rtol=0.0)
        return tri.alphas, tri.betas, tri.size, tri.num_iters

    alphas, betas, sizes, iters = jax.lax.map(one_probe, jax.random.split(key, num_probes))
    nodes, weights, num_nodes = jax.vmap(_gauss_quadrature)(alphas, betas, sizes)
    ok = num_nodes > 0
    lo = jnp.min(jnp.where(ok[:, None], nodes, jnp.inf))
    hi = jnp.max(jnp.where(ok[:, None], nodes, -jnp.inf))
    lo, hi = jnp.where(jnp.any(ok), lo, 0.0), jnp.where(jnp.any(ok), hi, 0.0)
    sigma = _default_width(lo, hi)
    if kernel_width is not None:
        given = jnp.asarray(kernel_width, dtype)
        sigma = jnp.where(jnp.isfinite(given) & (given > 0), given, sigma)
    if grid is None:
        points = jnp.linspace(lo - 5.0 * sigma, hi + 5.0 * sigma, num_points, dtype=dtype)
    else:
        points = jnp.asarray(grid).astype(dtype)
    z = (points[:, None, None] - nodes[None]) / sigma
    kernel = jnp.exp(-0.5 * z * z) / (sigma * math.sqrt(2.0 * math.pi))
    count = jnp.sum(ok).astype(dtype)
    total = jnp.sum(kernel * weights[None], axis=(1, 2))
    density = jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)
    return SpectralDensity(
        density, points, nodes, weights, sigma, num_nodes, jnp.sum(iters).astype(jnp.int32)
    )
