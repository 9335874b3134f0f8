r"""The paper's claims as tests on measured runs: each one PASS, FAIL (with its numbers) or N/A.

:func:`evaluate_claims` reads plain data (the ``results`` dict :mod:`cdat_core.lab.verify`
writes to its JSON report; see :func:`evaluate_claims` for the layout) and returns one
:class:`Claim` per statement of the paper that the lab checks. Nothing here runs an
experiment, so tests can feed synthetic runs in which a claim must fail.

Thresholds were fixed from the paper's wording before the runs, and are not tuned to make a
claim pass. The conventions, used everywhere below:

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

from collections.abc import Mapping, Sequence
from typing import Any

from cdat_core.lab import _claims_findings, _claims_more
from cdat_core.lab._claim_tools import ABOUT, CHANGE, EDGE_TOLERANCE, ON_PAR, Claim, Context

__all__ = [
    "ABOUT",
    "CHANGE",
    "EDGE_TOLERANCE",
    "ON_PAR",
    "Claim",
    "evaluate_claims",
    "format_table",
    "summary",
]


def evaluate_claims(results: Mapping[str, Any]) -> list[Claim]:
    r"""Evaluate every claim on measured results (plain data: dicts, lists, numbers).

    Layout read (any part may be missing; its claims are then N/A):

    - ``budget``: ``"quick"`` or ``"full"``;
    - ``identity``: ``sharpness``, ``smallest_eigenvalue``, ``on_edge_aligned``,
      ``greedy_aligned``, ``on_edge_random`` (list), ``model_gap_random`` (list);
    - ``experiments``: name (``gd``, ``momentum``, ``adam``, ``cnn_gd``) ->
      ``{"description", "runs": {label: run}, "selected": {tuner: label}}``; labels
      ``"cdat σ=2"``, ``"cdat σ=1"``, ``"sharpness σ=3"``, ...; a run has ``tuner``,
      ``hyperparams``, ``num_steps``, ``initial_sharpness``, ``final_loss`` (C.3 score), the
      per-step series ``step``, ``loss``, ``learning_rate`` and the per-record series
      ``record_step``, ``sharpness``, ``eos``;
    - ``models``: ``constant``, ``classical``, ``cdat_2``, ``cdat_1.9`` -> trajectories
      (``learning_rate``, ``sharpness``, ``y``, ``p``, ``diverged``);
    - ``costs``: ``{"description", "ratios": {"directional_curvature/objective flops": ...}}``.

    Args:
      results: the results.

    Returns:
      The claims, in report order.

    Example:
      >>> from cdat_core.lab import claims
      >>> out = claims.evaluate_claims({"budget": "test", "costs": {"ratios": {
      ...     "directional_curvature/objective flops": 3.2,
      ...     "sgd+cdat/sgd wall": 5.0}}})
      >>> {c.id: c.status for c in out if c.group == "cost"}  # doctest: +NORMALIZE_WHITESPACE
      {'C1.curvature_flops': 'PASS', 'C2.curvature_memory': 'N/A',
       'C3.curvature_wall_time': 'N/A', 'C4.cdat_step_wall_time': 'FAIL',
       'C5.cdat_step_flops': 'N/A', 'C6.forward_mode_memory': 'N/A'}
    """
    ctx = Context(results)
    return [
        *_claims_more.identity_claims(ctx),
        *_claims_findings.finding1(ctx),
        *_claims_findings.finding2(ctx),
        *_claims_findings.finding3(ctx),
        *_claims_more.other_tuners(ctx),
        *_claims_more.bases(ctx),
        *_claims_more.model_claims(ctx),
        *_claims_more.cost_claims(ctx),
    ]


def summary(claims: Sequence[Claim]) -> dict[str, int]:
    """Counts of PASS, FAIL and N/A.

    Args:
      claims: evaluated claims.

    Returns:
      ``{"PASS": n, "FAIL": n, "N/A": n}``.

    Example:
      >>> from cdat_core.lab import claims
      >>> claims.summary(claims.evaluate_claims({}))["N/A"] > 0
      True
    """
    out = {"PASS": 0, "FAIL": 0, "N/A": 0}
    for claim in claims:
        out[claim.status] += 1
    return out


def format_table(claims: Sequence[Claim], width: int = 100) -> str:
    """The claims as a plain-text table: id, status, statement, criterion, measured.

    Args:
      claims: evaluated claims.
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
      1 PASS, 0 FAIL, 0 N/A
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
    lines.append(f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['N/A']} N/A")
    return "\n".join(lines)
