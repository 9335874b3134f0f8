r"""The paper's claims as tests on measured runs: each one PASS, FAIL (with its numbers) or N/A.

A claim is declared once, with the runs it needs, by the :func:`claim` decorator
(:mod:`~cdat_core.lab.claims.registry`), in the module of its part of the paper:

- :mod:`~cdat_core.lab.claims.identities`: eqs (3) and (7) on a quadratic (``I*``);
- :mod:`~cdat_core.lab.claims.full_batch`: findings 1-3 on the GD runs (``F1*``-``F3*``);
- :mod:`~cdat_core.lab.claims.other_tuners`: Polyak, hyper-gradient, σ/λ_max, schedules
  (``B.*``);
- :mod:`~cdat_core.lab.claims.update_geometry`: successive-update cosine, alignment with the
  top eigenvector, greedy vs on-edge one-step decrease (Fig. 12, 16, 17; ``B.*``);
- :mod:`~cdat_core.lab.claims.base_optimizers`: finding 3 with momentum, Adam, a CNN;
- :mod:`~cdat_core.lab.claims.simplified_models`: the models of eqs (4)-(10) (``D*``);
- :mod:`~cdat_core.lab.claims.costs`: the cost of CDAT (``C*``);
- :mod:`~cdat_core.lab.claims.cheap_cdat`: cheap curvature estimators, cost and quality (``C7``,
  ``C8``);
- :mod:`~cdat_core.lab.claims.mini_batch`: the mini-batch study, Section 3.1 (``M*``).

Modules are imported below in report order. :func:`evaluate_claims` reads plain data (one seed's
``results``, as :mod:`cdat_core.lab.verify` writes them to its JSON report) and returns one
:class:`Claim` per registered claim; :func:`evaluate_over_seeds`
(:mod:`~cdat_core.lab.claims.verdicts`) evaluates every claim on every seed and applies the
verdict rule (PASS when >= 80 % of the seeds hold it, FAIL when <= 20 %, MIXED otherwise).
Nothing here runs an experiment, so tests can feed synthetic runs in which a claim must fail;
:func:`cdat_core.lab.plans.build_plan` reads the claims' needs.

Thresholds were fixed from the paper's wording before the runs, and are not tuned to make a
claim pass (:mod:`~cdat_core.lab.claims.criteria`). The conventions, used everywhere:

* "rises" / "falls": by at least :data:`CHANGE` (10 %) between the two windows compared, a
  margin well above the sharpness estimate's accuracy (Lanczos residual 1e-3) and the
  step-to-step oscillation of :math:`\eta\lambda_{\max}` at the edge;
* "about k times": within a factor :data:`ABOUT` (1.5) of k, i.e. in :math:`[k/1.5, 1.5k]`;
* "on par with": a final loss at most :data:`ON_PAR` (1.25) times the reference's; the
  constant learning rate it is compared with is itself tuned on a grid of ratio 2;
* "near the edge": :math:`\eta\lambda_{\max}` within :data:`EDGE_TOLERANCE` (0.2) of 2;
* losses are the appendix C.3 score, the mean loss of the last 5 iterates (``final_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cdat_core.lab.claims.criteria import ABOUT, CHANGE, EDGE_TOLERANCE, ON_PAR
from cdat_core.lab.claims.registry import (
    BOTH,
    CLAIMS,
    FULL_ONLY,
    Claim,
    ClaimSpec,
    claim,
    evaluate_claims,
)

# The parts of the paper, in report order: importing a module registers its claims.
from cdat_core.lab.claims import identities  # isort: skip
from cdat_core.lab.claims import full_batch  # isort: skip
from cdat_core.lab.claims import other_tuners  # isort: skip
from cdat_core.lab.claims import update_geometry  # isort: skip
from cdat_core.lab.claims import base_optimizers  # isort: skip
from cdat_core.lab.claims import simplified_models  # isort: skip
from cdat_core.lab.claims import costs  # isort: skip
from cdat_core.lab.claims import cheap_cdat  # isort: skip
from cdat_core.lab.claims import mini_batch  # isort: skip
from cdat_core.lab.claims.verdicts import (  # isort: skip
    FAIL_AT,
    PASS_AT,
    VERDICT_RULE,
    Verdict,
    evaluate_over_seeds,
    format_markdown,
)

__all__ = [
    "ABOUT",
    "BOTH",
    "CHANGE",
    "CLAIMS",
    "EDGE_TOLERANCE",
    "FAIL_AT",
    "FULL_ONLY",
    "ON_PAR",
    "PASS_AT",
    "STATUSES",
    "VERDICT_RULE",
    "Claim",
    "ClaimSpec",
    "Verdict",
    "base_optimizers",
    "cheap_cdat",
    "claim",
    "costs",
    "evaluate_claims",
    "evaluate_over_seeds",
    "format_markdown",
    "format_table",
    "full_batch",
    "identities",
    "mini_batch",
    "other_tuners",
    "simplified_models",
    "summary",
    "update_geometry",
    "verdicts",
]

#: The statuses of a claim, in the summary's order.
STATUSES = ("PASS", "MIXED", "FAIL", "N/A")


def summary(claims: Sequence[Any]) -> dict[str, int]:
    """Counts of each status (:data:`STATUSES`).

    Args:
      claims: evaluated claims (:class:`Claim` of one seed, or :class:`Verdict` over seeds).

    Returns:
      ``{"PASS": n, "MIXED": n, "FAIL": n, "N/A": n}``.

    Example:
      >>> from cdat_core.lab import claims
      >>> claims.summary(claims.evaluate_claims({}))["N/A"] > 0
      True
    """
    out = dict.fromkeys(STATUSES, 0)
    for c in claims:
        out[c.status] += 1
    return out


def format_table(claims: Sequence[Any], width: int = 100) -> str:
    """The claims as a plain-text table: id, status, statement, criterion, measured.

    Args:
      claims: evaluated claims (:class:`Claim` or :class:`Verdict`: a verdict's ``measured``
        starts with "holds in k/n seeds" and the median and range of its figure).
      width: wrap width of the text columns.

    Returns:
      The table, one block per claim, and a summary line.

    Example:
      >>> from cdat_core.lab import claims
      >>> c = claims.Claim("X.1", "cost", "about 3x", "in [2, 4.5]", "ratio = 3.1", True,
      ...                  {}, "test")
      >>> print(claims.format_table([c]))  # doctest: +NORMALIZE_WHITESPACE
      PASS  X.1  [cost]
            paper:    about 3x
            test:     in [2, 4.5]
            measured: ratio = 3.1   (test)
      1 PASS, 0 MIXED, 0 FAIL, 0 N/A
    """
    import textwrap

    lines = []
    for c in claims:
        lines.append(f"{c.status:<5} {c.id}  [{c.group}]")
        for label, text in (
            ("paper:", c.statement),
            ("test:", c.criterion),
            ("measured:", f"{c.measured}   ({c.source})"),
        ):
            wrapped = textwrap.wrap(text, width=max(20, width - 16)) or [""]
            lines.append(f"      {label:<9} {wrapped[0]}")
            lines.extend(f"                {w}" for w in wrapped[1:])
    counts = summary(claims)
    lines.append(", ".join(f"{counts[s]} {s}" for s in STATUSES))
    return "\n".join(lines)
