"""How a claim is declared and evaluated: the :func:`claim` decorator and :data:`CLAIMS`.

A claim is a function decorated with its id, group, the paper's statement, the test applied
and the runs it needs (like a pytest test and its fixtures)::

    @claim(
        id="F3.cdat2.on_edge",
        group="finding 3",
        statement="CDAT σ=2: ηλ_max ≈ 2 or slightly above (Fig. 6).",
        criterion="median ηλ_max over the second half in [1.9, 2.3]",
        needs={"cdat2": needs.run("gd", "cdat", sigma=2.0)},
    )
    def _on_edge(cdat2):
        eos = late_eos(cdat2)
        return 1.9 <= eos <= 2.3, f"median ηλ_max over the second half {fmt(eos)}", {"eos": eos}

The function gets each need, found in the results, as the keyword argument of its name, and
returns ``(passed, measured, values)``; when a need is missing, or the function returns
``None``, the claim is N/A. :data:`CLAIMS` keeps the claims in declaration order, which is
the report's order; ids are unique. :func:`evaluate_claims` evaluates them on one set of
results (one seed's runs).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cdat_core.lab.needs import Need
from cdat_core.lab.registry import Registry

__all__ = [
    "BOTH",
    "CLAIMS",
    "FULL_ONLY",
    "Claim",
    "ClaimSpec",
    "Outcome",
    "claim",
    "evaluate_claims",
]

#: ``(passed, measured in words, the numbers)``, or ``None`` when it cannot be evaluated.
Outcome = tuple[bool, str, dict[str, float]] | None

#: The budgets of a claim checked by every run of ``cdat-core verify``.
BOTH = ("quick", "full")
#: The budgets of a claim whose runs only the full budget affords (N/A in ``--quick``).
FULL_ONLY = ("full",)


class Claim(NamedTuple):
    """One claim of the paper, the test applied, and what was measured.

    Attributes:
      id: short identifier, e.g. ``"F1.greedy.lr_falls"``.
      group: ``"identity"``, ``"finding 1"``, ..., ``"model"``, ``"cost"``.
      statement: the paper's statement (with its figure or equation).
      criterion: the test, with its threshold.
      measured: what was measured, in words and numbers.
      passed: True (PASS), False (FAIL) or None (N/A: not evaluated, e.g. not in this budget).
      values: the numbers behind ``measured``.
      source: which experiment and budget produced the numbers.
    """

    id: str
    group: str
    statement: str
    criterion: str
    measured: str
    passed: bool | None
    values: dict[str, float]
    source: str

    @property
    def status(self) -> str:
        """``"PASS"``, ``"FAIL"`` or ``"N/A"``."""
        return "N/A" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclasses.dataclass(frozen=True, eq=False)
class ClaimSpec:
    """A declared claim (see :func:`claim` for the fields)."""

    id: str
    group: str
    statement: str
    criterion: str
    check: Callable[..., Outcome]
    needs: Mapping[str, Need]
    shown_with: tuple[Need, ...] = ()
    budgets: tuple[str, ...] = BOTH

    def source(self, results: Mapping[str, Any]) -> str:
        """Which budget and experiment (or measurement) the numbers come from, in words."""
        budget = str(results.get("budget", "?"))
        every = (*self.needs.values(), *self.shown_with)
        first = every[0]
        if first.kind == "measured":
            data = results.get(first.name)
            about = data.get("description", first.about) if isinstance(data, Mapping) else None
            return f"{budget}: {first.about if about is None else about}"
        exp = results.get("experiments", {}).get(first.experiment) or {}
        where = exp.get("description", first.experiment)
        return f"{budget}: {where} [{', '.join(n.label for n in every)}]"

    def evaluate(self, results: Mapping[str, Any]) -> Claim:
        """The claim on ``results`` (the layout of :func:`evaluate_claims`)."""
        source = self.source(results)
        found = {name: need.resolve(results) for name, need in self.needs.items()}
        out = None if any(v is None for v in found.values()) else self.check(**found)
        if out is None:
            return Claim(
                self.id,
                self.group,
                self.statement,
                self.criterion,
                "not evaluated in this budget",
                None,
                {},
                source,
            )
        passed, measured, values = out
        return Claim(
            self.id,
            self.group,
            self.statement,
            self.criterion,
            measured,
            bool(passed),
            values,
            source,
        )


#: Every declared claim, by id, in report order.
CLAIMS: Registry[ClaimSpec] = Registry("claim", key=lambda spec: spec.id)


def claim(
    *,
    id: str,
    group: str,
    statement: str,
    criterion: str,
    needs: Mapping[str, Need],
    shown_with: tuple[Need, ...] = (),
    budgets: tuple[str, ...] = BOTH,
) -> Callable[[Callable[..., Outcome]], ClaimSpec]:
    """Declare a claim: decorate its check, which gets its ``needs`` as keyword arguments.

    Args:
      id: the claim's fixed id (e.g. ``"F3.cdat2.on_edge"``); unique.
      group: the part of the paper (``"identity"``, ``"finding 1"``, ..., ``"cost"``).
      statement: the paper's statement, with its figure or equation.
      criterion: the test, with its threshold, fixed before any run.
      needs: argument name -> :class:`~cdat_core.lab.needs.Need`; the check's parameters
        without a default must be exactly these names.
      shown_with: runs named in the report's source beside the needs (the reference the
        paper's figure draws) but not read.
      budgets: the budgets whose plan must provide the needs (:data:`BOTH` or
        :data:`FULL_ONLY`).

    Returns:
      A decorator that registers the :class:`ClaimSpec` in :data:`CLAIMS` and returns it.

    Raises:
      ValueError: a duplicate id, no needs, or needs that do not match the check's
        parameters.

    Example:
      >>> from cdat_core.lab import needs
      >>> from cdat_core.lab.claims import CLAIMS, claim
      >>> with CLAIMS.scoped():
      ...     @claim(id="X.models_present", group="model", statement="s", criterion="c",
      ...            needs={"models": needs.measured("models", about="toy")})
      ...     def _present(models):
      ...         return True, f"{len(models)} models", {"count": float(len(models))}
      ...     _present.evaluate({"budget": "test", "models": {"a": 1}}).status
      'PASS'
      >>> "X.models_present" in CLAIMS
      False
    """
    if not needs:
        raise ValueError(f"claim {id!r} needs nothing; declare its needs")

    def register(check: Callable[..., Outcome]) -> ClaimSpec:
        params = inspect.signature(check).parameters.values()
        required = {p.name for p in params if p.default is inspect.Parameter.empty}
        if required != set(needs):
            raise ValueError(
                f"claim {id!r}: the check's arguments {sorted(required)} are not its needs "
                f"{sorted(needs)}"
            )
        spec = ClaimSpec(
            id, group, statement, criterion, check, dict(needs), tuple(shown_with), budgets
        )
        return CLAIMS.register(spec)

    return register


def evaluate_claims(results: Mapping[str, Any]) -> list[Claim]:
    r"""Evaluate every registered claim on measured results (plain data: dicts, lists, numbers).

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
    return [spec.evaluate(results) for spec in CLAIMS.values()]
