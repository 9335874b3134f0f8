"""Claims on the cost of CDAT (appendix C.3): curvature and step, in flops, memory and time.

The ratios are :func:`cdat_core.lab.measurements.cost_ratios` on the ``gd`` experiment's
problem: XLA's counts of the compiled programs, and wall times in interleaved rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import ABOUT
from cdat_core.lab.claims.registry import Outcome, claim

__all__: list[str] = []

COSTS = needs.measured("costs", experiment="gd")
Costs = Mapping[str, Any]


def _ratio(costs: Costs, key: str) -> float | None:
    if key not in costs.get("ratios", {}):
        return None
    raw = costs["ratios"][key]
    return math.nan if raw is None else float(raw)


def _about(key: str, target: float) -> Callable[[Costs], Outcome]:
    def check(costs: Costs) -> Outcome:
        ratio = _ratio(costs, key)
        if ratio is None:
            return None
        ok = target / ABOUT <= ratio <= target * ABOUT
        return ok, f"{key} = {ratio:.3g}", {key: ratio}

    return check


for _id, _key, _target, _statement in (
    (
        "C1.curvature_flops",
        "directional_curvature/objective flops",
        3.0,
        "uᵀHu by forward-over-forward costs about 3x the objective in compute (App. C.3).",
    ),
    (
        "C2.curvature_memory",
        "directional_curvature/objective bytes",
        3.0,
        "... and about 3x the memory needed for the objective (App. C.3); here XLA's "
        "argument + output + scratch bytes.",
    ),
    (
        "C3.curvature_wall_time",
        "directional_curvature/objective wall",
        3.0,
        "Curvature about 3x the objective (App. C.3), here in wall time.",
    ),
    (
        "C4.cdat_step_wall_time",
        "sgd+cdat/sgd wall",
        2.0,
        "A CDAT step takes about 2x the wall time of a constant-η step (App. C.3).",
    ),
    (
        "C5.cdat_step_flops",
        "sgd+cdat/sgd flops",
        2.0,
        "A CDAT step about 2x a plain step (App. C.3), here in XLA-counted flops.",
    ),
):
    claim(
        id=_id,
        group="cost",
        statement=_statement,
        criterion=f"{_key} in [{_target / ABOUT:.3g}, {_target * ABOUT:.3g}] (about {_target:g}x)",
        needs={"costs": COSTS},
    )(_about(_key, _target))


@claim(
    id="C6.forward_mode_memory",
    group="cost",
    statement="Forward-over-forward needs much less memory than Hessian-vector products "
    "(App. C.3).",
    criterion="scratch bytes of uᵀHu by jvp-of-jvp < by uᵀ(Hu) with hvp (forward over reverse)",
    needs={"costs": COSTS},
)
def _less_memory(costs: Costs) -> Outcome:
    key = "directional_curvature/hvp_dot temp_bytes"
    ratio = _ratio(costs, key)
    if ratio is None:
        return None
    return ratio < 1, f"{key} = {ratio:.3g}", {key: ratio}
