"""Claims on the paper's simplified models of learning rate and sharpness (Fig. 4, 9, 11).

The trajectories are :mod:`cdat_core.dynamics` at the figures' parameters
(:func:`cdat_core.lab.measurements.model_trajectories`): eq (4) with a constant η, eq (6)
(the classical tuner model) and eqs (9)-(10) (the CDAT model) with σ = 2 and σ = 1.9.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import fmt
from cdat_core.lab.claims.registry import Outcome, claim

__all__: list[str] = []

MODELS = needs.measured("models", about="cdat_core.dynamics at the paper's figure parameters")
Models = Mapping[str, Any]


def _series(models: Models, name: str, field: str) -> np.ndarray:
    return np.asarray(models[name][field], np.float64)


@claim(
    id="D1.constant_oscillates_at_edge",
    group="model",
    statement="Eq (4), constant η (Fig. 4): λ oscillates around 2/η.",
    criterion="mean λ over steps 50-100 within 5% of 2/η, not diverged by step 100",
    needs={"models": MODELS},
)
def _constant(models: Models) -> Outcome:
    if "constant" not in models:
        return None
    lam = _series(models, "constant", "sharpness")[50:101]
    eta = float(models["constant"]["learning_rate"][0])
    mean, diverged = float(lam.mean()), bool(models["constant"]["diverged"][100])
    return (
        abs(mean * eta / 2 - 1) <= 0.05 and not diverged,
        f"mean λ over steps 50-100 {fmt(mean)} vs 2/η {fmt(2 / eta)}; diverged by step "
        f"100: {diverged}",
        {"mean_sharpness": mean, "edge": 2 / eta},
    )


@claim(
    id="D2.classical_runaway_sharpening",
    group="model",
    statement="Eq (6), η = 2(1-ε)/λ (Fig. 4): runaway sharpening, η decays, y < 0 throughout.",
    criterion="λ increasing and η decreasing at every step, y < 0",
    needs={"models": MODELS},
)
def _classical(models: Models) -> Outcome:
    if "classical" not in models:
        return None
    lam = _series(models, "classical", "sharpness")
    eta = _series(models, "classical", "learning_rate")
    y = _series(models, "classical", "y")
    ok = bool(np.all(np.diff(lam) > 0) and np.all(np.diff(eta) < 0))
    return (
        ok and bool(np.all(y < 0)),
        f"λ {fmt(lam[0])} -> {fmt(lam[-1])}, η {fmt(eta[0])} -> {fmt(eta[-1])}, y in "
        f"[{fmt(y.min())}, {fmt(y.max())}]",
        {"sharpness_ratio": float(lam[-1] / lam[0]), "lr_ratio": float(eta[-1] / eta[0])},
    )


@claim(
    id="D3.cdat2_holds_edge",
    group="model",
    statement="Eqs (9)-(10), σ=2 (Fig. 9): y stays at the edge, p no longer decays.",
    criterion="max |y| over the second half < 1e-2 and p_end ≥ p_mid",
    needs={"models": MODELS},
)
def _cdat_edge(models: Models) -> Outcome:
    if "cdat_2" not in models:
        return None
    y, p = _series(models, "cdat_2", "y"), _series(models, "cdat_2", "p")
    half = y.size // 2
    late = float(np.max(np.abs(y[half:])))
    return (
        late < 1e-2 and p[-1] >= p[half],
        f"max |y| over the second half {late:.2e}; p {fmt(p[half])} -> {fmt(p[-1])}",
        {"max_abs_y": late, "p_mid": float(p[half]), "p_end": float(p[-1])},
    )


@claim(
    id="D4.cdat1.9_sharpens",
    group="model",
    statement="Eqs (9)-(10), σ=1.9 (Fig. 9, 11): y settles below 0, p decays, faster sharpening.",
    criterion="y_end < 0, p_end < p_mid, λ_end(σ=1.9) > λ_end(σ=2)",
    needs={"models": MODELS},
)
def _cdat_below(models: Models) -> Outcome:
    if "cdat_1.9" not in models or "cdat_2" not in models:
        return None
    y, p = _series(models, "cdat_1.9", "y"), _series(models, "cdat_1.9", "p")
    lam, lam2 = _series(models, "cdat_1.9", "sharpness"), _series(models, "cdat_2", "sharpness")
    half = y.size // 2
    ok = y[-1] < 0 and p[-1] < p[half] and lam[-1] > lam2[-1]
    return (
        bool(ok),
        f"σ=1.9: y_end {fmt(y[-1])}, p {fmt(p[half])} -> {fmt(p[-1])}, λ_end "
        f"{fmt(lam[-1])} vs σ=2 {fmt(lam2[-1])}",
        {
            "y_end": float(y[-1]),
            "sharpness_end": float(lam[-1]),
            "sharpness_end_2": float(lam2[-1]),
        },
    )
