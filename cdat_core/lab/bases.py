r"""The base optimizers whose direction the lab's tuners scale: the :data:`BASES` registry.

A base optimizer at learning rate 1 gives the direction :math:`u_t` (appendix C.3 of Roulet
et al., 2024: optax defaults): ``gd`` (``optax.sgd(1.0)``, :math:`u = -\nabla f`),
``momentum`` (``optax.sgd(1.0, momentum=0.9)``) and ``adam`` (``optax.adam(1.0)``,
:math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.999`, :math:`\varepsilon = 10^{-8}`). Each
:class:`BaseSpec` also says where :math:`\eta\lambda_{\max}` sits at the edge of stability
and which preconditioner its sharpness is measured with. To add a base optimizer, register
one :class:`BaseSpec` here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optax

from cdat_core.lab.registry import Registry
from cdat_core.lab.train import adam_preconditioner

__all__ = ["BASES", "BaseSpec", "preconditioner"]


@dataclasses.dataclass(frozen=True, eq=False)
class BaseSpec:
    r"""A base optimizer at learning rate 1.

    Attributes:
      name: its name in :data:`BASES`.
      build: ``() -> optax transformation`` giving the direction :math:`u_t`.
      description: the optimizer in words, for the report (``"GD with momentum 0.9"``).
      edge: :math:`\eta\lambda_{\max}` at the edge of stability: 2 for GD;
        :math:`2(1 + \beta)` for heavy-ball momentum :math:`\beta` (optax's trace); and
        :math:`2(1 + \beta_1)/(1 - \beta_1)` for Adam's preconditioned sharpness (Cohen et
        al., 2022, "Adaptive gradient methods at the edge of stability"). Plots draw it.
      preconditioner: ``() -> (opt_state -> P)`` for a base whose sharpness is measured
        preconditioned (appendix B.1), else ``None``.
    """

    name: str
    build: Callable[[], optax.GradientTransformation]
    description: str
    edge: float = 2.0
    preconditioner: Callable[[], Callable[[Any], Any]] | None = None


#: Base optimizers at learning rate 1, by name.
BASES: Registry[BaseSpec] = Registry("base optimizer")

BASES.register(BaseSpec("gd", lambda: optax.sgd(1.0), "GD"))
BASES.register(
    BaseSpec("momentum", lambda: optax.sgd(1.0, momentum=0.9), "GD with momentum 0.9", edge=3.8)
)
BASES.register(
    BaseSpec(
        "adam",
        lambda: optax.adam(1.0, b1=0.9, b2=0.999, eps=1e-8),
        "Adam",
        edge=38.0,
        preconditioner=lambda: adam_preconditioner(b2=0.999, eps=1e-8),
    )
)


def preconditioner(base: str) -> Callable[[Any], Any] | None:
    """The sharpness preconditioner of a base optimizer (Adam's), else ``None``.

    Args:
      base: a name in :data:`BASES`.

    Returns:
      ``opt_state -> P`` (e.g. :func:`cdat_core.lab.train.adam_preconditioner`) or ``None``.

    Example:
      >>> from cdat_core.lab import bases
      >>> bases.preconditioner("gd") is None, bases.preconditioner("adam") is not None
      (True, True)
    """
    spec = BASES.lookup(base)
    return None if spec.preconditioner is None else spec.preconditioner()
