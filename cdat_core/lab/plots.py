r"""PNG plots of runs and of the simplified models (matplotlib, Agg backend).

Everything here takes plain data, the run dicts of the JSON report (see
:func:`cdat_core.lab.report.run_summary`): per-step ``step``, ``loss``, ``learning_rate``,
``grad_norm`` and per-record ``record_step``, ``sharpness``, ``eos``.

- :func:`plot_runs`: one row of five panels in the style of the paper's Fig. 3 and 6: train
  loss, learning rate :math:`\eta_t`, sharpness :math:`\lambda_{\max}`, their product
  :math:`\eta\lambda_{\max}` (with the edge of stability at 2) and gradient norm.
- :func:`plot_models`: trajectories of :mod:`cdat_core.dynamics` (Fig. 4 and 9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdat_core.lab.bases import BASES
from cdat_core.lab.registry import FieldView

__all__ = ["EDGES", "plot_models", "plot_report", "plot_runs"]

#: Where :math:`\eta\lambda_{\max}` sits at the edge of stability, per base optimizer (a live
#: view of :data:`cdat_core.lab.bases.BASES`; see :class:`~cdat_core.lab.bases.BaseSpec`).
#: Plots draw it as a dashed line.
EDGES: Mapping[str, float] = FieldView(BASES, lambda spec: spec.edge)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _positive(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).copy()
    x[~(x > 0)] = np.nan
    return x


def plot_runs(
    runs: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "",
    edge: float = 2.0,
) -> Path:
    r"""Five panels: loss, :math:`\eta`, :math:`\lambda_{\max}`, their product, gradient norm.

    Args:
      runs: label -> run dict (per-step ``step``, ``loss``, ``learning_rate``, ``grad_norm``;
        per-record ``record_step``, ``sharpness``, ``eos``; missing series are skipped).
      path: the PNG file to write (its folder is created).
      title: the figure title.
      edge: where to draw the edge of stability on the :math:`\eta\lambda_{\max}` panel
        (see :data:`EDGES`).

    Returns:
      The path written.

    Example:
      >>> import tempfile, pathlib
      >>> from cdat_core.lab import plots
      >>> run = {"step": [0, 1, 2], "loss": [1.0, 0.5, 0.25], "learning_rate": [0.1] * 3,
      ...        "grad_norm": [1.0, 0.7, 0.5], "record_step": [1, 2], "sharpness": [10.0, 19.0],
      ...        "eos": [1.0, 1.9]}
      >>> out = plots.plot_runs({"gd": run}, pathlib.Path(tempfile.mkdtemp()) / "gd.png")
      >>> out.stat().st_size > 0
      True
    """
    panels = (
        ("Train loss", "step", "loss", True),
        ("Learning rate η", "step", "learning_rate", True),
        ("Sharpness λ_max", "record_step", "sharpness", True),
        ("η·λ_max", "record_step", "eos", False),
        ("Gradient norm", "step", "grad_norm", True),
    )
    plt, fig, axes, path = _new_figure(path, len(panels), (4.0 * len(panels), 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, run) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for ax, (_, xkey, ykey, log) in zip(axes, panels, strict=True):
            if xkey not in run or ykey not in run:
                continue
            x = np.asarray(run[xkey], np.float64)
            y = np.asarray(run[ykey], np.float64)
            y = _positive(y) if log else y
            if x.size and np.isfinite(y).any():
                ax.plot(
                    x,
                    y,
                    color=color,
                    lw=1.2,
                    label=label,
                    marker="." if ykey in ("sharpness", "eos") else None,
                    ms=3,
                )
    for ax, (label, _, _, log) in zip(axes, panels, strict=True):
        ax.set_title(label)
        ax.set_xlabel("Step")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[3].axhline(edge, color="k", ls="--", lw=0.8)
    return _finish(plt, fig, axes, path, title)


def _new_figure(path: str | Path, panels: int, size: tuple[float, float]) -> tuple[Any, ...]:
    """(pyplot, figure, axes, path) for ``panels`` panels side by side; the folder is made."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, panels, figsize=size)
    return plt, fig, axes, path


def _finish(plt: Any, fig: Any, axes: Any, path: str | Path, title: str) -> Path:
    """One legend below the panels (the first panel's labels), the title, save, close."""
    path = Path(path)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), frameon=False)
    if title:
        fig.suptitle(title)
    # Fixed margins: tight_layout measured every tick label of every log axis and took
    # half of the plots' time (23 of 46 s for the full run's figures).
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.6 / width,
        right=1 - 0.15 / width,
        bottom=0.9 / height,
        top=1 - (0.75 if title else 0.35) / height,
        wspace=0.9 / (width / len(axes)),
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_models(
    trajectories: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    fields: Sequence[str] = ("learning_rate", "sharpness", "y", "p"),
) -> Path:
    r"""Trajectories of the simplified models: one panel per field, one line per model.

    Steps flagged ``diverged`` are not drawn (they are frozen copies, not dynamics).

    Args:
      trajectories: label -> dict of per-step lists (``learning_rate``, ``sharpness``,
        ``y``, ``p``, ``g``, ``diverged``).
      path: the PNG file to write.
      title: the figure title.
      fields: the panels, in order; ``p`` and ``learning_rate`` are drawn on a log scale.

    Returns:
      The path written.

    Example:
      >>> import tempfile, pathlib
      >>> from cdat_core.lab import plots
      >>> traj = {"learning_rate": [1.0, 1.0], "sharpness": [1.9, 2.1], "y": [-0.1, 0.1],
      ...         "p": [0.1, 0.2], "diverged": [False, False]}
      >>> out = plots.plot_models({"η=1": traj}, pathlib.Path(tempfile.mkdtemp()) / "m.png")
      >>> out.exists()
      True
    """
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {
        "learning_rate": "Learning rate η",
        "sharpness": "Sharpness λ",
        "y": "y = ηλ - 2",
        "p": "p = x² (top direction)",
        "g": "g (second direction)",
    }
    fig, axes = plt.subplots(1, len(fields), figsize=(4.0 * len(fields), 3.4))
    axes = np.atleast_1d(axes)
    for label, traj in trajectories.items():
        ok = ~np.asarray(traj.get("diverged", []), bool)
        for ax, field in zip(axes, fields, strict=True):
            y = np.asarray(traj[field], np.float64)
            keep = ok if ok.size == y.size else np.ones(y.size, bool)
            y = np.where(keep, y, np.nan)
            if field in ("p", "g", "learning_rate"):
                y = _positive(y)
            ax.plot(np.arange(y.size), y, lw=1.2, label=label)
    for ax, field in zip(axes, fields, strict=True):
        ax.set_title(names.get(field, field))
        ax.set_xlabel("Step")
        if field in ("p", "g", "learning_rate"):
            ax.set_yscale("log")
        if field == "y":
            ax.axhline(0.0, color="k", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_report(report: Mapping[str, Any], folder: str | Path) -> list[str]:
    """Every plot of a verify report: per experiment Fig. 3 and 6 style, per tuner, models.

    Args:
      report: the (sanitized) report of :func:`cdat_core.lab.verify.run_verify`.
      folder: where the PNG files go.

    Returns:
      The paths written.

    Example:
      >>> import tempfile
      >>> from cdat_core.lab import plots
      >>> plots.plot_report({"results": {}}, tempfile.mkdtemp())
      []
    """
    folder = Path(folder)
    written = []
    results = report["results"]
    plan = report.get("plan", {}).get("experiments", {})
    for name, exp in results.get("experiments", {}).items():
        runs, selected = exp["runs"], exp["selected"]
        const = {k: runs[k] for k in [selected.get("constant")] if k in runs}
        title = exp["description"]
        edge = EDGES.get(plan.get(name, {}).get("base", "gd"), 2.0)
        classical = {
            **const,
            **{
                k: runs[k]
                for k in [selected.get("linesearch"), selected.get("greedy")]
                if k in runs
            },
        }
        if len(classical) > 1:
            path = plot_runs(
                classical, folder / f"{name}_fig3_classical.png", title=title, edge=edge
            )
            written.append(str(path))
        cdat_runs = {k: v for k, v in runs.items() if v["tuner"] == "cdat"}
        if cdat_runs:
            path = plot_runs(
                {**const, **cdat_runs}, folder / f"{name}_fig6_cdat.png", title=title, edge=edge
            )
            written.append(str(path))
        geometry = {
            **const,
            **{k: runs[k] for k in [selected.get("linesearch")] if k in runs},
            **{k: v for k, v in cdat_runs.items() if v["hyperparams"].get("sigma") in (1.0, 2.0)},
        }
        if any(v.get("update_cosine") for v in geometry.values()):
            from cdat_core.lab.plots_diagnostics import plot_update_geometry

            path = plot_update_geometry(
                geometry, folder / f"{name}_fig16_17_updates.png", title=title
            )
            written.append(str(path))
        ends = {k: v["spectrum_end"] for k, v in runs.items() if v.get("spectrum_end")}
        if exp.get("spectrum_start") and ends:
            from cdat_core.lab.plots_diagnostics import plot_spectra

            path = plot_spectra(
                exp["spectrum_start"], ends, folder / f"{name}_spectrum.png", title=title
            )
            written.append(str(path))
        for tuner in sorted({v["tuner"] for v in runs.values()}):
            group = {k: v for k, v in runs.items() if v["tuner"] == tuner}
            extra = const if tuner != "constant" else {}
            path = plot_runs(
                {**group, **extra}, folder / f"{name}_{tuner}.png", title=title, edge=edge
            )
            written.append(str(path))
    models = results.get("models", {})
    if models:
        pairs = {"constant": "η = 1 (eq 4)", "classical": "η = 1.9/λ (eq 6)"}
        fig4 = {label: models[k] for k, label in pairs.items() if k in models}
        written.append(
            str(
                plot_models(
                    fig4,
                    folder / "models_fig4.png",
                    title="Fig. 4 models",
                    fields=("learning_rate", "sharpness", "y"),
                )
            )
        )
        fig9 = {
            f"CDAT σ={k.split('_')[1]}": models[k] for k in ("cdat_2", "cdat_1.9") if k in models
        }
        written.append(
            str(plot_models(fig9, folder / "models_fig9.png", title="Fig. 9 model (eqs 9-10)"))
        )
    return written
