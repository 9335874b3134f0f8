r"""What a claim needs of a verify run, and where it is found in the results.

A claim (see :func:`cdat_core.lab.claims.claim`) declares its needs, as a pytest test declares
its fixtures; each :class:`Need` is one of

- :func:`run`: the run of a tuner with given numbers in an experiment (``"cdat σ=2"``);
- :func:`selected`: the best run of a tuner's grid by the appendix C.3 rule (or the run a
  grid designates for it: CDAT's σ=1 run is the ``greedy`` tuner's);
- :func:`grid`: every run of a tuner in an experiment;
- :func:`measured`: a measurement that is not a training run (``identity``, ``models``,
  ``costs``), possibly made on an experiment's problem.

:meth:`Need.resolve` finds the need in the results (``None`` when missing, which makes the
claim N/A); :func:`cdat_core.lab.plans.build_plan` turns the needs of the registered claims
into the runs of a budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from cdat_core.lab.tuners import TUNERS

__all__ = ["Need", "grid", "measured", "run", "selected"]


class Need(NamedTuple):
    """One thing a claim reads from the results.

    Attributes:
      kind: ``"run"``, ``"selected"``, ``"grid"`` or ``"measured"``.
      name: the tuner (``run``, ``selected``, ``grid``) or the measurement (``measured``).
      experiment: the experiment the runs belong to, or that a measurement is made on
        (``""``: none).
      numbers: ``run`` only: the tuner's numbers that identify the run (the others take
        the tuner's defaults), as sorted ``(name, value)`` pairs.
      about: ``measured`` only: the source named in the report when the measurement's
        results carry no ``description``.
    """

    kind: str
    name: str
    experiment: str = ""
    numbers: tuple[tuple[str, float], ...] = ()
    about: str = ""

    @property
    def label(self) -> str:
        """How the report names it: a run's label (``"cdat σ=2"``), else its name."""
        if self.kind == "run":
            return TUNERS.lookup(self.name).run_label(dict(self.numbers))
        return self.name

    def resolve(self, results: Mapping[str, Any]) -> Any:
        """The needed data in ``results`` (the layout of the verify report), or ``None``.

        A ``run`` or ``selected`` need resolves to a run dict, a ``grid`` to the list of the
        tuner's runs (``None`` when empty), a ``measured`` one to the measurement's data
        (``None`` when missing or empty).

        Example:
          >>> from cdat_core.lab import needs
          >>> results = {"experiments": {"gd": {"runs": {"cdat σ=2": {"tuner": "cdat"}},
          ...                                   "selected": {"cdat": "cdat σ=2"}}}}
          >>> needs.run("gd", "cdat", sigma=2.0).resolve(results)
          {'tuner': 'cdat'}
          >>> needs.selected("gd", "constant").resolve(results) is None
          True
        """
        if self.kind == "measured":
            return results.get(self.name) or None
        exp = results.get("experiments", {}).get(self.experiment)
        if exp is None:
            return None
        runs = exp.get("runs", {})
        if self.kind == "run":
            return runs.get(self.label)
        if self.kind == "selected":
            label = exp.get("selected", {}).get(self.name)
            return None if label is None else runs.get(label)
        return [r for r in runs.values() if r.get("tuner") == self.name] or None


def run(experiment: str, tuner: str, **numbers: float) -> Need:
    """The run of ``tuner`` with ``numbers`` in ``experiment``.

    Example:
      >>> from cdat_core.lab import needs
      >>> needs.run("gd", "cdat", sigma=2.0625).label
      'cdat σ=2.0625'
    """
    spec = TUNERS.lookup(tuner)
    unknown = sorted(set(numbers) - set(spec.defaults))
    if unknown:
        raise ValueError(f"tuner {tuner!r} has no numbers {unknown}")
    if spec.label[1] not in numbers:
        raise ValueError(f"a run of {tuner!r} is named by its {spec.label[1]!r}; give it")
    return Need("run", tuner, experiment, tuple(sorted(numbers.items())))


def selected(experiment: str, tuner: str) -> Need:
    """The best run of ``tuner``'s grid in ``experiment`` (appendix C.3), or its designate."""
    TUNERS.lookup(tuner)
    return Need("selected", tuner, experiment)


def grid(experiment: str, tuner: str) -> Need:
    """Every run of ``tuner`` in ``experiment``."""
    TUNERS.lookup(tuner)
    return Need("grid", tuner, experiment)


def measured(name: str, *, experiment: str = "", about: str = "") -> Need:
    """The measurement ``name`` (made on ``experiment``'s problem when given)."""
    return Need("measured", name, experiment, about=about)
