"""Claims on the full-batch GD runs of the digits MLP: findings 1-3 (Sections 2-3, Fig. 1-6).

- finding 1: classical tuners (linesearch, greedy CDAT σ=1) let the learning rate fall while
  the sharpness rises, stay just below the edge, and lose to a tuned constant;
- finding 2: a constant learning rate sharpens up to the edge of stability and stays there;
- finding 3: CDAT σ=2 warms up, stops sharpening, sits on the edge and matches the tuned
  constant; σ=1 is worse, σ≈2.06 often best, σ=2.5 diverges, σ=1.94 sharpens again.
"""

from __future__ import annotations

import math

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import (
    CHANGE,
    EDGE_TOLERANCE,
    ON_PAR,
    Run,
    arr,
    final_loss,
    fmt,
    late_eos,
    median,
    sharpness_change,
    window,
)
from cdat_core.lab.claims.registry import Outcome, claim

__all__: list[str] = []

CONSTANT = needs.selected("gd", "constant")
CDAT2 = needs.run("gd", "cdat", sigma=2.0)


# ---------------------------------------------------------------------------------- finding 1

for _tuner, _name in (
    ("linesearch", "linesearch (tuned on the C.3 grid)"),
    ("greedy", "greedy (σ=1)"),
):

    @claim(
        id=f"F1.{_tuner}.lr_falls_sharpness_rises",
        group="finding 1",
        statement=f"{_name}: η falls while λ_max rises (Fig. 3; by orders of magnitude over "
        "long runs).",
        criterion=f"median η last 20% ≤ first 20% / {CHANGE}, and λ_max last ≥ {CHANGE} x "
        "first record",
        needs={"tuned": needs.selected("gd", _tuner)},
        shown_with=(CONSTANT,),
    )
    def _falls(tuned: Run) -> Outcome:
        early = median(window(tuned, "learning_rate", 0.0, 0.2))
        late = median(window(tuned, "learning_rate", 0.8, 1.01))
        lam0, lam1 = sharpness_change(tuned)
        ratio_lr, ratio_lam = late / early, lam1 / lam0
        return (
            ratio_lr <= 1 / CHANGE and ratio_lam >= CHANGE,
            f"median η first 20% {fmt(early)} -> last 20% {fmt(late)} (x{ratio_lr:.3g}); "
            f"λ_max {fmt(lam0)} -> {fmt(lam1)} (x{ratio_lam:.3g})",
            {"lr_ratio": ratio_lr, "sharpness_ratio": ratio_lam},
        )

    @claim(
        id=f"F1.{_tuner}.below_edge",
        group="finding 1",
        statement=f"{_name}: ηλ_max stays just below 2 (Fig. 3).",
        criterion="median ηλ_max over the second half in [1, 2)",
        needs={"tuned": needs.selected("gd", _tuner)},
        shown_with=(CONSTANT,),
    )
    def _below(tuned: Run) -> Outcome:
        eos = late_eos(tuned)
        return 1.0 <= eos < 2.0, f"median ηλ_max over the second half: {fmt(eos)}", {"eos": eos}

    @claim(
        id=f"F1.{_tuner}.loses_to_constant",
        group="finding 1",
        statement=f"{_name} loses to a tuned constant η in the long run (Fig. 1).",
        criterion="final loss > tuned constant's",
        needs={"tuned": needs.selected("gd", _tuner), "const": CONSTANT},
    )
    def _loses(tuned: Run, const: Run, tuner: str = _tuner) -> Outcome:
        a, b = final_loss(tuned), final_loss(const)
        return (
            a > b,
            f"final loss {tuner} {fmt(a)} vs tuned constant {fmt(b)}",
            {
                tuner: a,
                "constant": b,
            },
        )


# ---------------------------------------------------------------------------------- finding 2


def _last_quarter_eos(run: Run) -> float:
    eos = arr(run, "eos")
    return median(eos[-max(1, len(eos) // 4) :])


@claim(
    id="F2.tuned_constant_at_edge",
    group="finding 2",
    statement="Constant η: λ_max stabilizes near 2/η, the edge of stability (Fig. 3).",
    criterion=f"tuned η: |ηλ_max - 2| ≤ {EDGE_TOLERANCE} (median of the last quarter of records)",
    needs={"best": CONSTANT},
)
def _edge(best: Run) -> Outcome:
    eta = float(best["hyperparams"]["learning_rate"])
    eos = _last_quarter_eos(best)
    return (
        abs(eos - 2) <= EDGE_TOLERANCE,
        f"tuned η={fmt(eta)}: ηλ_max over the last quarter {fmt(eos)} "
        f"(λ_max {fmt(eos / eta)} vs 2/η {fmt(2 / eta)})",
        {"eos": eos, "learning_rate": eta},
    )


@claim(
    id="F2.sharpens_to_edge",
    group="finding 2",
    statement="Constant η below the edge: λ_max rises, then stabilizes near 2/η (Fig. 3).",
    criterion=f"largest stable grid η with ηλ_0 ≤ 2: λ_max last ≥ {CHANGE} x first record and "
    f"|ηλ_max - 2| ≤ {EDGE_TOLERANCE} at the end",
    needs={"grid": needs.grid("gd", "constant")},
)
def _rises(grid: list[Run]) -> Outcome:
    stable = [
        r
        for r in grid
        if math.isfinite(final_loss(r))
        and float(r["hyperparams"]["learning_rate"]) * float(r["initial_sharpness"])
        <= 2 * (1 + 1e-3)
    ]
    if not stable:
        return None
    run = max(stable, key=lambda r: float(r["hyperparams"]["learning_rate"]))
    eta = float(run["hyperparams"]["learning_rate"])
    lam0, lam1 = sharpness_change(run)
    eos = _last_quarter_eos(run)
    return (
        lam1 >= CHANGE * lam0 and abs(eos - 2) <= EDGE_TOLERANCE,
        f"η={fmt(eta)} (ηλ_0={fmt(eta * float(run['initial_sharpness']))}): λ_max "
        f"{fmt(lam0)} -> {fmt(lam1)} (x{lam1 / lam0:.3g}), late ηλ_max {fmt(eos)}",
        {"sharpness_ratio": lam1 / lam0, "eos": eos, "learning_rate": eta},
    )


# ---------------------------------------------------------------------------------- finding 3


@claim(
    id="F3.cdat2.warmup",
    group="finding 3",
    statement="CDAT σ=2: η rises early, an automatic warm-up (Fig. 5).",
    criterion="median η over 15-25% of the run ≥ 2 x η at step 0",
    needs={"cdat2": CDAT2},
    shown_with=(CONSTANT,),
)
def _warmup(cdat2: Run) -> Outcome:
    lr = arr(cdat2, "learning_rate")
    first, peak = float(lr[0]), median(window(cdat2, "learning_rate", 0.15, 0.25))
    return (
        peak >= 2 * first,
        f"η at step 0 {fmt(first)}, median over 15-25% {fmt(peak)}",
        {"first": first, "early": peak},
    )


@claim(
    id="F3.cdat2.no_sharpening",
    group="finding 3",
    statement="CDAT σ=2: λ_max stops rising or falls (Fig. 6).",
    criterion=f"λ_max last ≤ {CHANGE} x first record",
    needs={"cdat2": CDAT2},
    shown_with=(CONSTANT,),
)
def _flat(cdat2: Run) -> Outcome:
    lam0, lam1 = sharpness_change(cdat2)
    return (
        lam1 <= CHANGE * lam0,
        f"λ_max {fmt(lam0)} -> {fmt(lam1)} (x{lam1 / lam0:.3g})",
        {"first": lam0, "last": lam1},
    )


@claim(
    id="F3.cdat2.on_edge",
    group="finding 3",
    statement="CDAT σ=2: ηλ_max ≈ 2 or slightly above (Fig. 6).",
    criterion="median ηλ_max over the second half in [1.9, 2.3]",
    needs={"cdat2": CDAT2},
    shown_with=(CONSTANT,),
)
def _on_edge(cdat2: Run) -> Outcome:
    eos = late_eos(cdat2)
    return 1.9 <= eos <= 2.3, f"median ηλ_max over the second half {fmt(eos)}", {"eos": eos}


def _losses(a: Run, b: Run, name_a: str, name_b: str) -> tuple[float, float, str, dict]:
    la, lb = final_loss(a), final_loss(b)
    return la, lb, f"final loss {name_a} {fmt(la)} vs {name_b} {fmt(lb)}", {name_a: la, name_b: lb}


@claim(
    id="F3.cdat2.on_par_with_constant",
    group="finding 3",
    statement="CDAT σ=2 is on par with or better than a tuned constant η (Fig. 5).",
    criterion=f"final loss ≤ {ON_PAR} x tuned constant's",
    needs={"cdat2": CDAT2, "const": CONSTANT},
)
def _on_par(cdat2: Run, const: Run) -> Outcome:
    la, lb, measured, values = _losses(cdat2, const, "cdat σ=2", "tuned constant")
    return la <= ON_PAR * lb, measured, values


@claim(
    id="F3.greedy_worse_than_cdat2",
    group="finding 3",
    statement="σ=1 (greedy) is worse than σ=2 (Fig. 5).",
    criterion="final loss σ=1 > σ=2",
    needs={"greedy": needs.run("gd", "cdat", sigma=1.0), "cdat2": CDAT2},
)
def _greedy_worse(greedy: Run, cdat2: Run) -> Outcome:
    la, lb, measured, values = _losses(greedy, cdat2, "cdat σ=1", "cdat σ=2")
    return la > lb, measured, values


@claim(
    id="F3.sigma_2.0625_best",
    group="finding 3",
    statement="σ ≈ 2.06 is often best (Fig. 5, 13).",
    criterion="final loss σ=2.0625 ≤ σ=2",
    needs={"above": needs.run("gd", "cdat", sigma=2.0625), "cdat2": CDAT2},
)
def _above_best(above: Run, cdat2: Run) -> Outcome:
    la, lb, measured, values = _losses(above, cdat2, "cdat σ=2.0625", "cdat σ=2")
    return la <= lb, measured, values


@claim(
    id="F3.sigma_2.5_diverges",
    group="finding 3",
    statement="σ=2.5 diverges (Fig. 5).",
    criterion="final loss not finite or ≥ the initial loss",
    needs={"run": needs.run("gd", "cdat", sigma=2.5)},
)
def _diverges(run: Run) -> Outcome:
    final, initial = final_loss(run), float(arr(run, "loss")[0])
    return (
        not math.isfinite(final) or final >= initial,
        f"σ=2.5: initial loss {fmt(initial)}, final {fmt(final)}",
        {"initial": initial, "final": final},
    )


@claim(
    id="F3.sigma_1.9375_sharpens",
    group="finding 3",
    statement="Just below the edge (σ=1.94) sharpening comes back (Fig. 6, 11).",
    criterion=f"λ_max last ≥ {CHANGE} x first record",
    needs={"run": needs.run("gd", "cdat", sigma=1.9375)},
)
def _sharpens_below(run: Run) -> Outcome:
    lam0, lam1 = sharpness_change(run)
    return (
        lam1 >= CHANGE * lam0,
        f"λ_max {fmt(lam0)} -> {fmt(lam1)} (x{lam1 / lam0:.3g})",
        {"first": lam0, "last": lam1},
    )
