"""cdat_core.lab: the embedded experiments (problems, tuners, training loops, claims, reports).

The lab may import scikit-learn and other extras; the core package never imports it.

Extension points are registries (:mod:`~cdat_core.lab.registry`), each declared where its
entries are defined:

- a tuner: one :class:`~cdat_core.lab.tuners.TunerSpec` in :mod:`~cdat_core.lab.tuners`;
- a base optimizer: one :class:`~cdat_core.lab.bases.BaseSpec` in :mod:`~cdat_core.lab.bases`;
- a problem: one :class:`~cdat_core.lab.problems.ProblemSpec` in
  :mod:`~cdat_core.lab.problems`;
- a claim: one function decorated with :func:`~cdat_core.lab.claims.claim` in the
  :mod:`~cdat_core.lab.claims` module of its part of the paper, with the runs it needs
  (:mod:`~cdat_core.lab.needs`); runs no claim needs yet get a sweep in the budgets'
  catalogs of :mod:`~cdat_core.lab.plans`.

:mod:`~cdat_core.lab.verify` (``cdat-core verify``) runs the plan the claims need, with
:mod:`~cdat_core.lab.train`, and writes the report (:mod:`~cdat_core.lab.report`,
:mod:`~cdat_core.lab.plots`).
"""

from cdat_core.lab import (
    bases,
    claims,
    cli,
    measurements,
    needs,
    plans,
    plots,
    problems,
    registry,
    report,
    schedules,
    train,
    tuners,
    verify,
)

__all__ = [
    "bases",
    "claims",
    "cli",
    "measurements",
    "needs",
    "plans",
    "plots",
    "problems",
    "registry",
    "report",
    "schedules",
    "train",
    "tuners",
    "verify",
]
