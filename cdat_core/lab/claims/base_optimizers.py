"""Finding 3 beyond GD on the MLP: other base optimizers (momentum, Adam) and architectures (CNN).

For each such experiment, CDAT σ=2 should be on par with a tuned constant learning rate,
and σ=1 worse than σ=2 (Fig. 5 of the paper). Their runs are afforded by the full budget
only; in ``cdat-core verify --quick`` these claims are N/A.
"""

from __future__ import annotations

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import ON_PAR, Run, final_loss, fmt
from cdat_core.lab.claims.registry import FULL_ONLY, Outcome, claim

__all__: list[str] = []

for _experiment, _what, _cdat in (
    ("momentum", "GD with momentum", {}),
    ("adam", "Adam (CDAT EMA β=0.9)", {"ema_decay": 0.9}),
    ("cnn_gd", "GD on the digits CNN", {}),
):
    _cdat2 = needs.run(_experiment, "cdat", sigma=2.0, **_cdat)

    @claim(
        id=f"F3.{_experiment}.on_par_with_constant",
        group="finding 3",
        statement=f"{_what}: CDAT σ=2 on par with or better than the tuned constant (Fig. 5).",
        criterion=f"final loss ≤ {ON_PAR} x tuned constant's",
        needs={"cdat2": _cdat2, "const": needs.selected(_experiment, "constant")},
        budgets=FULL_ONLY,
    )
    def _on_par(cdat2: Run, const: Run) -> Outcome:
        a, b = final_loss(cdat2), final_loss(const)
        return (
            a <= ON_PAR * b,
            f"final loss CDAT σ=2 {fmt(a)} vs tuned constant {fmt(b)}",
            {"cdat_2": a, "constant": b},
        )

    @claim(
        id=f"F3.{_experiment}.greedy_worse",
        group="finding 3",
        statement=f"{_what}: σ=1 worse than σ=2 (Fig. 5).",
        criterion="final loss σ=1 > σ=2",
        needs={"greedy": needs.run(_experiment, "cdat", sigma=1.0, **_cdat), "cdat2": _cdat2},
        budgets=FULL_ONLY,
    )
    def _greedy_worse(greedy: Run, cdat2: Run) -> Outcome:
        la, lb = final_loss(greedy), final_loss(cdat2)
        return la > lb, f"final loss σ=1 {fmt(la)} vs σ=2 {fmt(lb)}", {"sigma_1": la, "sigma_2": lb}
