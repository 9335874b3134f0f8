r"""PNG plots of the update-geometry diagnostics (Fig. 12's 4th panel, 16, 17) and of spectra.

- :func:`plot_update_geometry`: three panels from the run dicts of the JSON report: the cosine
  between successive updates (a 20-step running mean), the alignment
  :math:`|\langle u, v_{\max}\rangle| / \|u\|` of the update with the top Hessian eigenvector,
  and the instant gap :math:`f(w + \eta_{oe} u) - f(w + \eta_{qg} u)` of Fig. 16 (positive:
  the greedy step decreases the loss more from that iterate).
- :func:`plot_spectra`: the Hessian spectral density (stochastic Lanczos quadrature,
  :mod:`cdat_core.lab.spectra`) at :math:`w_0` and at the end of the tuned constant, greedy and
  CDAT σ=2 runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cdat_core.lab.plots import _finish, _new_figure

__all__ = ["plot_spectra", "plot_update_geometry"]


def _running_mean(x: np.ndarray, width: int = 20) -> np.ndarray:
    if x.size < width:
        return x
    kernel = np.ones(width) / width
    return np.convolve(x, kernel, mode="valid")


def plot_update_geometry(
    runs: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str = ""
) -> Path:
    r"""Successive-update cosine, alignment with the top eigenvector, and the instant gap.

    Args:
      runs: label -> run dict (per-step ``step`` and ``update_cosine``; per-record
        ``record_step``, ``alignment`` and ``instant_gap``; missing series are skipped).
      path: the PNG file to write (its folder is created).
      title: the figure title.

    Returns:
      The path written.

    Example:
      >>> import tempfile, pathlib
      >>> from cdat_core.lab import plots_diagnostics
      >>> run = {"step": list(range(40)), "update_cosine": [-0.9] * 40, "record_step": [20, 40],
      ...        "alignment": [0.8, 0.9], "instant_gap": [0.01, 0.02]}
      >>> out = plots_diagnostics.plot_update_geometry(
      ...     {"cdat σ=2": run}, pathlib.Path(tempfile.mkdtemp()) / "geometry.png")
      >>> out.stat().st_size > 0
      True
    """
    plt, fig, axes, path = _new_figure(path, 3, (13.0, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, run) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        cosine = np.asarray(run.get("update_cosine", []), np.float64)
        steps = np.asarray(run.get("step", []), np.float64)
        if cosine.size and cosine.size == steps.size:
            smooth = _running_mean(cosine)
            axes[0].plot(
                steps[steps.size - smooth.size :], smooth, color=color, lw=1.2, label=label
            )
        record = np.asarray(run.get("record_step", []), np.float64)
        for ax, key in ((axes[1], "alignment"), (axes[2], "instant_gap")):
            y = np.asarray([np.nan if v is None else v for v in run.get(key, [])], np.float64)
            if y.size == record.size and np.isfinite(y).any():
                ax.plot(record, y, color=color, lw=1.2, marker=".", ms=4, label=label)
    axes[0].set_title("cos(u_t, u_t-1), 20-step mean (Fig. 17)")
    axes[0].set_ylim(-1.05, 1.05)
    axes[1].set_title("|<u, v_max>| / ||u|| (Fig. 12, 17)")
    axes[1].set_ylim(-0.02, 1.02)
    axes[2].set_title("f(w+η_oe u) - f(w+η_qg u), u = -∇f (Fig. 16)")
    axes[2].axhline(0.0, color="k", lw=0.8, ls="--")
    axes[2].set_yscale("symlog", linthresh=1e-4)
    for ax in axes:
        ax.set_xlabel("Step")
        ax.grid(alpha=0.3)
    return _finish(plt, fig, axes, path, title)


def plot_spectra(
    start: Mapping[str, Any],
    ends: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    r"""Hessian spectral densities at :math:`w_0` and at the end of runs (log density).

    Args:
      start: ``grid`` and ``density`` at the initial weights.
      ends: label -> ``grid`` and ``density`` at the run's final weights.
      path: the PNG file to write (its folder is created).
      title: the figure title.

    Returns:
      The path written.

    Example:
      >>> import tempfile, pathlib
      >>> from cdat_core.lab import plots_diagnostics
      >>> d = {"grid": [0.0, 1.0, 2.0], "density": [0.5, 0.4, 0.1]}
      >>> out = plots_diagnostics.plot_spectra(d, {"cdat σ=2": d},
      ...                                      pathlib.Path(tempfile.mkdtemp()) / "s.png")
      >>> out.stat().st_size > 0
      True
    """
    plt, fig, axes, path = _new_figure(path, 2, (11.0, 3.6))
    axes[1].sharey(axes[0])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    curves = [(axes[0], "w_0", start, "k")] + [
        (axes[1], label, d, colors[i % len(colors)]) for i, (label, d) in enumerate(ends.items())
    ]
    for ax, label, d, color in curves:
        x = np.asarray(d.get("grid", []), np.float64)
        y = np.asarray([np.nan if v is None else v for v in d.get("density", [])], np.float64)
        if x.size and x.size == y.size:
            ax.plot(x, np.where(y > 1e-12, y, np.nan), color=color, lw=1.2, label=label)
    axes[0].set_title("At initialization")
    axes[1].set_title("At the end of training")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("Hessian eigenvalue")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    axes[0].set_ylabel("density (SLQ)")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.93 if title else 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
