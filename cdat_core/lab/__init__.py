"""cdat_core.lab: the embedded experiments (problems, training loops, reports).

The lab may import scikit-learn and other extras; the core package never imports it.
"""

from cdat_core.lab import (
    claims,
    cli,
    measurements,
    plots,
    problems,
    report,
    train,
    tuners,
    verify,
)

__all__ = [
    "claims",
    "cli",
    "measurements",
    "plots",
    "problems",
    "report",
    "train",
    "tuners",
    "verify",
]
