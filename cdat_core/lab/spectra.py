r"""Hessian spectral densities for the verify report (issue 17): start and end of training.

:func:`density` runs :func:`cdat_core.hessian_spectral_density` (stochastic Lanczos
quadrature, :data:`NUM_PROBES` Rademacher probes of :data:`NUM_STEPS` Lanczos steps each:
``NUM_PROBES * NUM_STEPS`` Hessian-vector products) on the full data, compiled once per
objective, and returns plain lists for the JSON report. The runner measures it at
:math:`w_0` and at the final iterate of the tuned constant, greedy (σ=1) and CDAT σ=2 runs of
the experiment named :data:`EXPERIMENT`, on the first seed;
:func:`cdat_core.lab.plots_diagnostics.plot_spectra` draws them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from cdat_core.spectrum import hessian_spectral_density

__all__ = ["EXPERIMENT", "NUM_POINTS", "NUM_PROBES", "NUM_STEPS", "density", "wanted"]

#: The experiment whose spectra are measured.
EXPERIMENT = "gd"
#: Probes, Lanczos steps per probe, and points of the smoothed density.
NUM_PROBES, NUM_STEPS, NUM_POINTS = 4, 24, 200


@functools.lru_cache(maxsize=8)
def _compiled(loss: Callable[..., Any]) -> Callable[..., Any]:
    def run(params: Any, data: Any, key: jax.Array) -> Any:
        out = hessian_spectral_density(
            loss,
            params,
            *data,
            key=key,
            num_probes=NUM_PROBES,
            num_steps=NUM_STEPS,
            num_points=NUM_POINTS,
        )
        return out.grid, out.density, out.nodes, out.weights

    return jax.jit(run)


def density(
    loss: Callable[..., Any], params: Any, data: Sequence[Any], key: jax.Array
) -> dict[str, list[Any]]:
    """The smoothed Hessian spectral density of ``loss`` at ``params`` as plain lists.

    Args:
      loss: ``loss(params, *data)``.
      params: the point.
      data: the full data.
      key: PRNG key of the probes.

    Returns:
      ``grid`` and ``density`` (``NUM_POINTS`` each), and the quadrature ``nodes`` and
      ``weights`` (``NUM_PROBES`` x ``NUM_STEPS``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from cdat_core.lab import spectra
      >>> loss = lambda w, a: 0.5 * jnp.sum(a * w**2)
      >>> out = spectra.density(loss, jnp.ones(3), (jnp.array([1.0, 2.0, 3.0]),),
      ...                       jax.random.key(0))
      >>> sorted({round(x, 3) for row in out["nodes"] for x in row})
      [1.0, 2.0, 3.0]
    """
    grid, dens, nodes, weights = jax.device_get(_compiled(loss)(params, tuple(data), key))
    keep = np.asarray(weights) > 0
    return {
        "grid": np.asarray(grid, np.float64).tolist(),
        "density": np.asarray(dens, np.float64).tolist(),
        "nodes": [np.asarray(n)[k].tolist() for n, k in zip(nodes, keep, strict=True)],
        "weights": [np.asarray(w)[k].tolist() for w, k in zip(weights, keep, strict=True)],
    }


def wanted(tuner: str, hyperparams: dict[str, float], selected_constant: bool) -> bool:
    """Whether a run's final spectrum goes in the report: tuned constant, CDAT σ=1 and σ=2."""
    if tuner == "constant":
        return selected_constant
    return tuner == "cdat" and float(hyperparams.get("sigma", 0.0)) in (1.0, 2.0)
