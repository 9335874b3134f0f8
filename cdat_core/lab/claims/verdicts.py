r"""Verdicts over seeds: every claim evaluated on every seed, and the rule that turns k/n into one.

A claim (:class:`~cdat_core.lab.claims.registry.ClaimSpec`) is a pure function of one seed's
results; at the edge of stability a single trajectory is partly chance, so the verify job
runs every experiment from several seeds and :func:`evaluate_over_seeds` evaluates each claim
on each of them. The verdict rule (:data:`VERDICT_RULE`), fixed before any run:

- the claim *holds in k/n seeds*, n counting the seeds on which it could be evaluated;
- **PASS** when :math:`k/n \ge 0.8` (:data:`PASS_AT`), **FAIL** when :math:`k/n \le 0.2`
  (:data:`FAIL_AT`), **MIXED** otherwise; **N/A** when no seed evaluates it.

A claim read only from measurements that no seed enters (the simplified models, the cost
ratios: ``shared``) is evaluated once (n = 1). Each :class:`Verdict` carries the per-seed
outcomes and the median and range of the claim's *figure*, the first number its check
returns.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from cdat_core.lab.claims.criteria import fmt
from cdat_core.lab.claims.registry import CLAIMS, ClaimSpec

__all__ = [
    "FAIL_AT",
    "PASS_AT",
    "VERDICT_RULE",
    "Verdict",
    "evaluate_over_seeds",
    "format_markdown",
    "verdict",
]

#: Smallest fraction of seeds that hold a claim for PASS.
PASS_AT = 0.8
#: Largest fraction of seeds that hold a claim for FAIL.
FAIL_AT = 0.2
#: The verdict rule in words (written to the report).
VERDICT_RULE = (
    f"each claim is evaluated on every seed; PASS when it holds in >= {PASS_AT:.0%} of the "
    f"seeds that evaluate it, FAIL when in <= {FAIL_AT:.0%}, MIXED otherwise, N/A when no "
    "seed evaluates it"
)


def verdict(held: int, total: int) -> str:
    """The status of a claim that holds in ``held`` of ``total`` seeds.

    Example:
      >>> from cdat_core.lab.claims import verdicts
      >>> [verdicts.verdict(k, 5) for k in (5, 4, 3, 1, 0)] + [verdicts.verdict(0, 0)]
      ['PASS', 'PASS', 'MIXED', 'FAIL', 'FAIL', 'N/A']
    """
    if total <= 0:
        return "N/A"
    if not 0 <= held <= total:
        raise ValueError(f"held must be in [0, total={total}], got {held}")
    fraction = held / total
    # a tolerance so that 4/5 counts as 80 % whatever the rounding
    if fraction >= PASS_AT - 1e-12:
        return "PASS"
    return "FAIL" if fraction <= FAIL_AT + 1e-12 else "MIXED"


class Verdict(NamedTuple):
    """One claim over seeds.

    Attributes:
      id: the claim's id.
      group: its part of the paper.
      statement: the paper's statement.
      criterion: the test applied to each seed.
      status: ``"PASS"``, ``"FAIL"``, ``"MIXED"`` or ``"N/A"`` (see :func:`verdict`).
      seeds_held: k, the seeds on which the claim holds.
      seeds_total: n, the seeds on which it was evaluated.
      figure: the name of the claim's figure (its check's first number; ``""``: none).
      median: the median of the figure over the n seeds (NaN when none).
      low: its smallest value.
      high: its largest value.
      measured: k/n and the figure's median and range, then the first seed's words.
      source: which budget and runs the numbers come from.
      per_seed: one dict per seed: ``seed``, ``status`` (PASS / FAIL / N/A), ``measured``,
        ``values``.
    """

    id: str
    group: str
    statement: str
    criterion: str
    status: str
    seeds_held: int
    seeds_total: int
    figure: str
    median: float
    low: float
    high: float
    measured: str
    source: str
    per_seed: tuple[dict[str, Any], ...]


def _over_seeds(spec: ClaimSpec, per_seed: Mapping[int, Mapping[str, Any]]) -> Verdict:
    outcomes: list[dict[str, Any]] = []
    for seed, results in per_seed.items():
        c = spec.evaluate(results)
        outcomes.append(
            {"seed": seed, "status": c.status, "measured": c.measured, "values": c.values}
        )
    evaluated = [o for o in outcomes if o["status"] != "N/A"]
    held = sum(o["status"] == "PASS" for o in evaluated)
    figure = next(iter(evaluated[0]["values"]), "") if evaluated else ""
    numbers = np.asarray(
        [float(o["values"].get(figure, math.nan)) for o in evaluated if figure], np.float64
    )
    numbers = numbers[~np.isnan(numbers)]
    mid, low, high = (
        (float(np.median(numbers)), float(numbers.min()), float(numbers.max()))
        if numbers.size
        else (math.nan, math.nan, math.nan)
    )
    if not evaluated:
        measured = outcomes[0]["measured"] if outcomes else "not evaluated"
    else:
        n = len(evaluated)
        words = f"holds in {held}/{n} seed{'s' if n > 1 else ''}"
        if numbers.size:
            words += f"; {figure} median {fmt(mid)} [{fmt(low)}, {fmt(high)}]"
        measured = f"{words}. seed {evaluated[0]['seed']}: {evaluated[0]['measured']}"
    first = next(iter(per_seed.values()), {})
    return Verdict(
        spec.id,
        spec.group,
        spec.statement,
        spec.criterion,
        verdict(held, len(evaluated)),
        held,
        len(evaluated),
        figure,
        mid,
        low,
        high,
        measured,
        spec.source(first),
        tuple(outcomes),
    )


def evaluate_over_seeds(
    per_seed: Mapping[int, Mapping[str, Any]], *, shared: Collection[str] = ()
) -> list[Verdict]:
    """Evaluate every registered claim on every seed's results and apply the verdict rule.

    Args:
      per_seed: seed -> that seed's results (the layout of
        :func:`cdat_core.lab.claims.evaluate_claims`), in seed order.
      shared: measurements that no seed enters (the same in every seed's results); a claim
        that reads only these is evaluated on the first seed alone.

    Returns:
      One :class:`Verdict` per registered claim, in report order.

    Example:
      >>> from cdat_core.lab.claims import verdicts
      >>> def results(ratio):
      ...     return {"budget": "test", "costs": {"ratios": {
      ...         "directional_curvature/objective flops": ratio}}}
      >>> out = verdicts.evaluate_over_seeds({s: results(r) for s, r in
      ...                                     enumerate((3.2, 3.1, 9.0, 9.0, 3.3))})
      >>> c1 = next(v for v in out if v.id == "C1.curvature_flops")
      >>> c1.status, c1.seeds_held, c1.seeds_total, c1.median
      ('MIXED', 3, 5, 3.3)
      >>> c1 = next(v for v in verdicts.evaluate_over_seeds(
      ...     {s: results(3.2) for s in range(5)}, shared={"costs"}) if v.id == c1.id)
      >>> c1.status, c1.seeds_total
      ('PASS', 1)
    """
    seeds = list(per_seed)
    out = []
    for spec in CLAIMS.values():
        only_shared = all(n.kind == "measured" and n.name in shared for n in spec.needs.values())
        chosen = seeds[:1] if only_shared else seeds
        out.append(_over_seeds(spec, {s: per_seed[s] for s in chosen}))
    return out


def format_markdown(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """Verdicts as a markdown table: status, claim, the paper, k/n seeds, the figure's spread.

    Reads plain dicts (``report.json``'s ``claims``; a :class:`Verdict` gives one with
    ``_asdict()``), so a report's table can be rebuilt without rerunning it.

    Args:
      verdicts: dicts with the fields of :class:`Verdict`.

    Returns:
      The table, a header and one row per claim; the last column is the figure's median and
      range over seeds, then the first seed's words.

    Example:
      >>> from cdat_core.lab.claims import verdicts
      >>> row = {"id": "C1.x", "status": "MIXED", "statement": "about 3x", "seeds_held": 3,
      ...        "seeds_total": 5, "figure": "ratio", "median": 3.3, "low": 3.1, "high": 9.0,
      ...        "per_seed": [{"seed": 0, "status": "PASS", "measured": "ratio = 3.2"}]}
      >>> print(verdicts.format_markdown([row]))
      | | claim | paper | holds in | measured: median [min, max] over seeds; first seed |
      |---|---|---|---|---|
      | MIXED | `C1.x` | about 3x | 3/5 | ratio 3.3 [3.1, 9]; seed 0: ratio = 3.2 |
    """
    lines = [
        "| | claim | paper | holds in | measured: median [min, max] over seeds; first seed |",
        "|---|---|---|---|---|",
    ]
    for v in verdicts:
        first = next((o for o in v["per_seed"] if o["status"] != "N/A"), None)
        parts = []
        if v["figure"] and v["seeds_total"]:
            spread = f"{v['figure']} {fmt(v['median'])}"
            if v["seeds_total"] > 1:
                spread += f" [{fmt(v['low'])}, {fmt(v['high'])}]"
            parts.append(spread)
        if first is not None:
            parts.append(f"seed {first['seed']}: {first['measured']}")
        cells = [
            v["status"],
            f"`{v['id']}`",
            v["statement"],
            f"{v['seeds_held']}/{v['seeds_total']}" if v["seeds_total"] else "-",
            "; ".join(parts) or "not evaluated",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
