r"""Claims on the geometry of the updates of the GD runs: Fig. 12 (4th panel), 16 and 17.

Read from the diagnostics :func:`cdat_core.lab.train.run_lanes` records (see
:class:`cdat_core.lab.history.History`): ``update_cosine``, the cosine between successive
updates at every step; ``alignment``, :math:`|\langle u, v_{\max}\rangle| / \|u\|` of the last
update with the top Hessian eigenvector at every record; ``instant_gap``,
:math:`f(w + \eta_{oe} u) - f(w + \eta_{qg} u)` for :math:`u = -\nabla f(w)` at every record of
the CDAT runs (positive: the greedy step decreases the loss more from that iterate).

Thresholds, fixed before any run of these claims:

- "on most steps": at more than :data:`MOST` (half) of the finite records;
- "opposed directions": a median successive-update cosine at most :data:`OPPOSED` (-0.5)
  over the steps after the first :data:`SETTLE` (10 %) of the run ("quickly");
- "more aligned": a larger median alignment over the second half of the records.
"""

from __future__ import annotations

import numpy as np

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import Run, arr, final_loss, fmt, median, window
from cdat_core.lab.claims.registry import Outcome, claim

__all__ = ["MOST", "OPPOSED", "SETTLE"]

#: "On most steps": more than this fraction of the records.
MOST = 0.5
#: "Opposed directions": median cosine between successive updates at most this.
OPPOSED = -0.5
#: "Quickly": the cosine is read after this fraction of the run.
SETTLE = 0.1

CONSTANT = needs.selected("gd", "constant")
GREEDY = needs.run("gd", "cdat", sigma=1.0)
CDAT2 = needs.run("gd", "cdat", sigma=2.0)


def _positive_fraction(run: Run) -> float:
    gap = arr(run, "instant_gap")
    gap = gap[np.isfinite(gap)]
    return float(np.mean(gap > 0)) if gap.size else float("nan")


def _late_alignment(run: Run) -> float:
    align, steps = arr(run, "alignment"), arr(run, "record_step")
    if align.size != steps.size:  # not recorded
        return float("nan")
    total = float(run.get("num_steps", steps[-1] if steps.size else 0))
    return median(align[steps > 0.5 * total])


@claim(
    id="B.greedy_larger_instant_decrease",
    group="update geometry",
    statement="From the same iterate the greedy step (σ=1) decreases the loss more than the "
    "on-edge step (σ=2) on most steps, yet σ=1 loses in the long run (Fig. 16).",
    criterion=f"f(w+η_oe u) - f(w+η_qg u) > 0 (u = -∇f(w)) at > {MOST:.0%} of the records "
    "along both the σ=1 and the σ=2 runs, and final loss σ=1 > σ=2",
    needs={"greedy": GREEDY, "cdat2": CDAT2},
)
def _instant(greedy: Run, cdat2: Run) -> Outcome:
    along_greedy, along_edge = _positive_fraction(greedy), _positive_fraction(cdat2)
    lg, l2 = final_loss(greedy), final_loss(cdat2)
    return (
        along_greedy > MOST and along_edge > MOST and lg > l2,
        f"greedy step better at {along_greedy:.0%} of the records along σ=1 and "
        f"{along_edge:.0%} along σ=2; final loss σ=1 {fmt(lg)} vs σ=2 {fmt(l2)}",
        {"along_greedy": along_greedy, "along_on_edge": along_edge, "greedy": lg, "cdat_2": l2},
    )


@claim(
    id="B.cdat_updates_oppose",
    group="update geometry",
    statement="For σ≈2, as for the tuned constant, successive updates quickly turn to opposed "
    "directions; not for σ=1 (Fig. 17).",
    criterion=f"median cos(u_t, u_t-1) after the first {SETTLE:.0%} of steps ≤ {OPPOSED} for "
    f"CDAT σ=2 and the tuned constant, > {OPPOSED} for σ=1",
    needs={"cdat2": CDAT2, "constant": CONSTANT, "greedy": GREEDY},
)
def _oppose(cdat2: Run, constant: Run, greedy: Run) -> Outcome:
    c2, cc, c1 = (
        median(window(r, "update_cosine", SETTLE, 1.01)) for r in (cdat2, constant, greedy)
    )
    return (
        c2 <= OPPOSED and cc <= OPPOSED and c1 > OPPOSED,
        f"median cosine of successive updates: CDAT σ=2 {fmt(c2)}, tuned constant {fmt(cc)}, "
        f"σ=1 {fmt(c1)}",
        {"cdat_2": c2, "constant": cc, "greedy": c1},
    )


@claim(
    id="B.tuner_alignment_with_top_eigenvector",
    group="update geometry",
    statement="Updates at the edge (tuned constant, CDAT σ=2) are more aligned with the top "
    "Hessian eigenvector than those of the classical tuners (our reading of Fig. 12's "
    "fourth panel, which the paper does not state in words).",
    criterion="median |<u, v_max>|/||u|| over the second half of the records: both the tuned "
    "constant's and CDAT σ=2's > both the greedy (σ=1) and the tuned linesearch's",
    needs={
        "constant": CONSTANT,
        "cdat2": CDAT2,
        "greedy": GREEDY,
        "linesearch": needs.selected("gd", "linesearch"),
    },
)
def _alignment(constant: Run, cdat2: Run, greedy: Run, linesearch: Run) -> Outcome:
    a = {
        k: _late_alignment(r)
        for k, r in (
            ("constant", constant),
            ("cdat_2", cdat2),
            ("greedy", greedy),
            ("linesearch", linesearch),
        )
    }
    edge, classical = min(a["constant"], a["cdat_2"]), max(a["greedy"], a["linesearch"])
    return (
        bool(edge > classical),
        "median alignment, second half: tuned constant {constant}, CDAT σ=2 {cdat_2}, "
        "σ=1 {greedy}, linesearch {linesearch}".format(**{k: fmt(v) for k, v in a.items()}),
        a,
    )
