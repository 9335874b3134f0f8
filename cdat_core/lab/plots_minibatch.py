r"""PNG plots of the mini-batch study (:mod:`cdat_core.lab.minibatch`), matplotlib Agg.

- :func:`plot_heatmap`: Fig. 7 of the paper: normalized performance (end train loss over
  initial train loss, capped at 1) of CDAT over :math:`\sigma` x batch size, one panel per
  EMA :math:`\beta_{cdat}`, the mean over the seeds given, with the best :math:`\sigma` of
  each batch size marked;
- :func:`plot_curves`: per batch size (one row each), the train loss, the learning rate and
  the test error per epoch of the selected CDAT, constant, warm-up + cosine and linesearch
  runs (Fig. 8, 14, 20);
- :func:`plot_study`: both, for a verify report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdat_core.lab.claims.mini_batch import cdat_label
from cdat_core.lab.plots import _pyplot

__all__ = ["heatmap_values", "plot_curves", "plot_heatmap", "plot_study"]

Study = Mapping[str, Any]
#: The selected runs drawn by :func:`plot_curves`, in legend order.
TUNERS = ("cdat", "constant", "warmup_cosine", "linesearch")


def heatmap_values(studies: Sequence[Study], beta: float) -> np.ndarray:
    """``(len(sigmas), len(batch_sizes))`` mean normalized performance, each capped at 1.

    A run whose loss is not finite (``None`` in the report) counts as 1, no progress.

    Example:
      >>> from cdat_core.lab import plots_minibatch
      >>> run = lambda x: {"normalized": x}
      >>> study = {"sigmas": [1.0, 2.0], "batch_sizes": [16], "runs": {"16": {
      ...     "cdat σ=1 β=0": run(0.5), "cdat σ=2 β=0": run(None)}}}
      >>> plots_minibatch.heatmap_values([study, study], 0.0).tolist()
      [[0.5], [1.0]]
    """
    first = studies[0]
    out = np.zeros((len(first["sigmas"]), len(first["batch_sizes"])))
    for study in studies:
        for i, sigma in enumerate(first["sigmas"]):
            for j, b in enumerate(first["batch_sizes"]):
                value = study["runs"][str(b)][cdat_label(sigma, beta)]["normalized"]
                value = 1.0 if value is None or not np.isfinite(value) else float(value)
                out[i, j] += min(value, 1.0)
    return out / len(studies)


def plot_heatmap(studies: Sequence[Study], path: str | Path) -> Path:
    r"""Fig. 7: performance over :math:`\sigma` x batch size, a panel per :math:`\beta`.

    Args:
      studies: one result of :func:`cdat_core.lab.minibatch.run_study` per seed (same
        grids); the panels show their mean.
      path: the PNG file to write (its folder is created).

    Returns:
      The path written.

    Example:
      >>> import tempfile, pathlib
      >>> from cdat_core.lab import plots_minibatch
      >>> runs = {f"cdat σ={s:g} β=0": {"normalized": 0.5 * s} for s in (1.0, 2.0)}
      >>> study = {"sigmas": [1.0, 2.0], "batch_sizes": [16], "ema_decays": [0.0],
      ...          "runs": {"16": runs}}
      >>> out = plots_minibatch.plot_heatmap([study], pathlib.Path(tempfile.mkdtemp()) / "h.png")
      >>> out.stat().st_size > 0
      True
    """
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = studies[0]
    sigmas, sizes, betas = first["sigmas"], first["batch_sizes"], first["ema_decays"]
    fig, axes = plt.subplots(
        1, len(betas), figsize=(4.4 * len(betas) + 1, 4.0), squeeze=False, layout="constrained"
    )
    panels = [heatmap_values(studies, beta) for beta in betas]
    low = max(min(float(v.min()) for v in panels), 1e-3)
    norm = LogNorm(vmin=low, vmax=1.0) if low < 1.0 else None
    image = None
    for ax, beta, values in zip(axes[0], betas, panels, strict=True):
        image = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
        best = np.argmin(values, axis=0)
        ax.scatter(
            range(len(sizes)),
            best,
            marker="s",
            s=520,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
        )
        for i in range(len(sigmas)):
            for j in range(len(sizes)):
                dark = values[i, j] > np.sqrt(low)  # the darker half of the log scale
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if dark else "black",
                )
        ax.set_xticks(range(len(sizes)), [str(b) for b in sizes])
        ax.set_yticks(range(len(sigmas)), [f"{s:g}" for s in sigmas])
        ax.set_xlabel("Batch size")
        ax.set_ylabel("Scaling factor σ")
        ax.set_title(f"β_cdat = {beta:g}")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="avg. end train loss / initial (≤ 1)")
    fig.suptitle(
        f"CDAT: normalized performance, mean over {len(studies)} seed(s); red: the best σ of "
        f"each batch size\n{first.get('description', '')}",
        fontsize=9,
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _series(run: Mapping[str, Any], key: str) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in run.get(key, [])], np.float64)


def plot_curves(study: Study, path: str | Path) -> Path:
    """Per batch size: train loss, learning rate and test error per epoch of the selected runs.

    Args:
      study: one seed's result of :func:`cdat_core.lab.minibatch.run_study`.
      path: the PNG file to write.

    Returns:
      The path written.

    Example:
      >>> import tempfile, pathlib
      >>> from cdat_core.lab import plots_minibatch
      >>> run = {"train_loss": [0.4, 0.2], "learning_rate": [0.1, 0.2], "test_error": [0.3, 0.2],
      ...        "hyperparams": {}}
      >>> study = {"batch_sizes": [16], "initial_loss": 0.5, "initial_test_error": 0.9,
      ...          "runs": {"16": {"a": run}}, "selected": {"16": {"cdat": "a"}}}
      >>> out = plots_minibatch.plot_curves(study, pathlib.Path(tempfile.mkdtemp()) / "c.png")
      >>> out.exists()
      True
    """
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = study["batch_sizes"]
    panels = (
        ("train_loss", "Train loss", True),
        ("learning_rate", "Learning rate η", True),
        ("test_error", "Test error", False),
    )
    fig, axes = plt.subplots(len(sizes), 3, figsize=(13, 2.6 * len(sizes)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, b in zip(axes, sizes, strict=True):
        runs, chosen = study["runs"][str(b)], study["selected"][str(b)]
        for k, tuner in enumerate(TUNERS):
            if tuner not in chosen:
                continue
            label = chosen[tuner]
            run = runs[label]
            for ax, (key, _, _) in zip(row, panels, strict=True):
                y = _series(run, key)
                start = {
                    "train_loss": study["initial_loss"],
                    "test_error": study["initial_test_error"],
                }.get(key)
                x = np.arange(1, y.size + 1)
                if start is not None:
                    x, y = np.concatenate([[0], x]), np.concatenate([[start], y])
                if key == "learning_rate":
                    y = np.where(y > 0, y, np.nan)
                ax.plot(x, y, color=colors[k % len(colors)], lw=1.2, label=label)
        for ax, (_, title, log) in zip(row, panels, strict=True):
            ax.set_title(f"batch {b}: {title}", fontsize=9)
            ax.set_xlabel("Epoch")
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=6, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_study(studies: Sequence[Study], folder: str | Path) -> list[str]:
    """The heatmap (mean over ``studies``) and the first study's curves; ``[]`` without any.

    Example:
      >>> import tempfile
      >>> from cdat_core.lab import plots_minibatch
      >>> plots_minibatch.plot_study([], tempfile.mkdtemp())
      []
    """
    if not studies:
        return []
    folder = Path(folder)
    return [
        str(plot_heatmap(studies, folder / "minibatch_fig7_heatmap.png")),
        str(plot_curves(studies[0], folder / "minibatch_curves.png")),
    ]
