"""Claims on the other tuners of appendix B, on GD: Polyak, hyper-gradient, σ/λ_max, schedules.

Their runs (Fig. 13, 15, 19 of the paper) are afforded by the full budget only; in
``cdat-core verify --quick`` these claims are N/A.
"""

from __future__ import annotations

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import (
    CHANGE,
    ON_PAR,
    Run,
    arr,
    final_loss,
    fmt,
    loss_at,
    median,
    sharpness_change,
)
from cdat_core.lab.claims.registry import FULL_ONLY, Outcome, claim

__all__: list[str] = []

CONSTANT = needs.selected("gd", "constant")
CDAT2 = needs.run("gd", "cdat", sigma=2.0)


@claim(
    id="B.polyak_larger_steps",
    group="other tuners",
    statement="Polyak step sizes select larger learning rates than the tuned constant (Fig. 13).",
    criterion="median Polyak η (η_max tuned) > tuned constant η",
    needs={"polyak": needs.selected("gd", "polyak"), "const": CONSTANT},
    budgets=FULL_ONLY,
)
def _polyak(polyak: Run, const: Run) -> Outcome:
    a = median(arr(polyak, "learning_rate"))
    b = float(const["hyperparams"]["learning_rate"])
    return (
        a > b,
        f"median Polyak η {fmt(a)} vs tuned constant η {fmt(b)}",
        {"polyak": a, "constant": b},
    )


@claim(
    id="B.hypergradient_on_par_and_sharpens",
    group="other tuners",
    statement="Hyper-gradient descent is on par with the tuned constant, with slow progressive "
    "sharpening (Fig. 13).",
    criterion=f"final loss ≤ {ON_PAR} x constant's and λ_max last ≥ {CHANGE} x first record",
    needs={"hyper": needs.selected("gd", "hypergradient"), "const": CONSTANT},
    budgets=FULL_ONLY,
)
def _hypergradient(hyper: Run, const: Run) -> Outcome:
    a, b = final_loss(hyper), final_loss(const)
    lam0, lam1 = sharpness_change(hyper)
    return (
        a <= ON_PAR * b and lam1 >= CHANGE * lam0,
        f"final loss {fmt(a)} vs tuned constant {fmt(b)}; λ_max {fmt(lam0)} -> "
        f"{fmt(lam1)} (x{lam1 / lam0:.3g})",
        {"hypergradient": a, "constant": b, "sharpness_ratio": lam1 / lam0},
    )


@claim(
    id="B.exact_sharpness_rule",
    group="other tuners",
    statement="η = σ/λ_max (eq 16): σ=2 performs poorly, σ=3 better (Fig. 15).",
    criterion="loss(σ=2) > CDAT σ=2 at the same step, and loss(σ=3) < loss(σ=2)",
    needs={
        "two": needs.run("gd", "sharpness", sigma=2.0),
        "three": needs.run("gd", "sharpness", sigma=3.0),
        "cdat2": CDAT2,
    },
    budgets=FULL_ONLY,
)
def _sharpness_rule(two: Run, three: Run, cdat2: Run) -> Outcome:
    steps = int(two.get("num_steps", 0))
    l2, l3, lc = final_loss(two), final_loss(three), loss_at(cdat2, steps)
    return (
        l2 > lc and l3 < l2,
        f"after {steps} steps: η=2/λ_max loss {fmt(l2)}, η=3/λ_max {fmt(l3)}, CDAT σ=2 {fmt(lc)}",
        {"sharpness_2": l2, "sharpness_3": l3, "cdat_2": lc},
    )


@claim(
    id="B.warmup_schedule_vs_cdat",
    group="other tuners",
    statement="Pre-fixed warm-up schedules can still beat CDAT (Fig. 19, full batch).",
    criterion="final loss warm-up+cosine (peak tuned) < CDAT σ=2 (full batch here)",
    needs={"schedule": needs.selected("gd", "warmup_cosine"), "cdat2": CDAT2},
    budgets=FULL_ONLY,
)
def _schedule(schedule: Run, cdat2: Run) -> Outcome:
    a, b = final_loss(schedule), final_loss(cdat2)
    return (
        a < b,
        f"final loss warm-up+cosine (tuned peak) {fmt(a)} vs CDAT σ=2 {fmt(b)}",
        {"warmup_cosine": a, "cdat_2": b},
    )
