"""Claims on the identities of eqs (3) and (7): the greedy and on-edge rates on a quadratic.

Measured by :func:`cdat_core.lab.measurements.identity_checks` through
:func:`cdat_core.scale_by_cdat` itself, against closed forms computed in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import fmt
from cdat_core.lab.claims.registry import Outcome, claim

__all__: list[str] = []

IDENTITY = needs.measured("identity", about="quadratic, float32")


@claim(
    id="I1.aligned",
    group="identity",
    statement="Eq (7)/(3): with u = -∇f(w) along the top eigenvector, η_oe = 2/λ_max and "
    "η_qg = 1/λ_max.",
    criterion="relative error ≤ 1e-4 (float32)",
    needs={"data": IDENTITY},
)
def _aligned(data: dict[str, Any]) -> Outcome:
    lam = float(data["sharpness"])
    on_edge, greedy = float(data["on_edge_aligned"]), float(data["greedy_aligned"])
    e1, e2 = abs(on_edge * lam / 2 - 1), abs(greedy * lam - 1)
    return (
        max(e1, e2) <= 1e-4,
        f"σ=2: η={fmt(on_edge)} vs 2/λ={fmt(2 / lam)}; σ=1: η={fmt(greedy)} vs "
        f"1/λ={fmt(1 / lam)}; max rel. error {e1:.1e}, {e2:.1e}",
        {"on_edge": on_edge, "greedy": greedy, "sharpness": lam, "error": max(e1, e2)},
    )


@claim(
    id="I2.on_edge_model",
    group="identity",
    statement="Eq (7): η_oe = max{η ≥ 0: q(η) ≤ f(w)} = -2∇fᵀu/uᵀHu, so q(η_oe) = f(w) and "
    "2/λ_max ≤ η_oe ≤ 2/λ_min on a quadratic.",
    criterion="bounds hold (rel. 1e-5) and |q(η_oe) - f| / |η_oe ∇fᵀu| ≤ 1e-4 for every direction",
    needs={"data": IDENTITY},
)
def _general(data: dict[str, Any]) -> Outcome:
    lam, low = float(data["sharpness"]), float(data["smallest_eigenvalue"])
    eta = np.asarray(data["on_edge_random"], np.float64)
    gap = np.asarray(data["model_gap_random"], np.float64)
    ok = bool(np.all(eta >= 2 / lam * (1 - 1e-5)) and np.all(eta <= 2 / low * (1 + 1e-5)))
    ok = ok and float(np.max(np.abs(gap))) <= 1e-4
    return (
        ok,
        f"{eta.size} random directions: η_oe in [{fmt(eta.min())}, {fmt(eta.max())}] "
        f"within [2/λ_max, 2/λ_min] = [{fmt(2 / lam)}, {fmt(2 / low)}]; "
        f"max |q(η_oe) - f| / |η_oe ∇fᵀu| = {np.max(np.abs(gap)):.1e}",
        {"min": float(eta.min()), "max": float(eta.max()), "gap": float(np.max(np.abs(gap)))},
    )
