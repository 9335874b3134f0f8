r"""What a training run records: :class:`History`, :class:`TrainResult`, the C.3 score.

Plain NumPy containers filled by :mod:`cdat_core.lab.train` (and re-exported there, so
``train.History`` keeps working), and :func:`last_iterates_loss`, the appendix C.3 score that
the lab's grid selection and claims read.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["History", "TrainResult", "last_iterates_loss"]

PyTree = Any


class History(NamedTuple):
    r"""What :func:`train` recorded, as NumPy arrays (host memory).

    Per step :math:`t = 0, \dots, T-1` (shape ``(T,)``):

    Attributes:
      loss: :math:`f(w_t)` on the data the step used (the mini-batch when batching).
      learning_rate: :math:`\eta_t`, the step taken from :math:`w_t` (NaN when the optimizer
        state has no ``learning_rate`` field).
      grad_norm: :math:`\|\nabla f(w_t)\|` (of the same batch).
      internals: name -> per-step values of the optimizer state's named scalar fields after
        step :math:`t` (e.g. ``numerator``, ``curvature``, ``num_steps``, ``accepted``).
      record_step: shape ``(R,)``: the steps :math:`t` (multiples of ``record_every``, up to
        :math:`T`) at whose parameters :math:`w_t` the diagnostics below were measured.
      record_loss: :math:`f(w_t)` on the full data at the record steps.
      sharpness: :math:`\lambda_{\max}` at the record steps, of the Hessian, or of the
        preconditioned Hessian when ``preconditioned``; NaN once the params are not finite.
      sharpness_converged: whether Lanczos met its tolerance there.
      record_learning_rate: the median of :math:`\eta` over the chunk of steps that ends at
        the record (robust to a linesearch's step-to-step jumps); it multiplies
        ``sharpness`` in :attr:`eos`.
      preconditioned: whether the sharpness is that of the preconditioned Hessian.
      initial_sharpness: :math:`\lambda_{\max}(\nabla^2 f(w_0))`, never preconditioned.
      seconds: wall time of the run (shared by the runs of one :func:`sweep`).
      update_cosine: per step, the cosine between the update :math:`u_t` applied at step
        :math:`t` and :math:`u_{t-1}` (0 at step 0 and next to a zero update; Fig. 17).
      alignment: per record, :math:`|\langle u, v_{\max}\rangle| / \|u\|` for the last update
        :math:`u` and the top eigenvector of the (preconditioned) Hessian, :math:`u` scaled by
        :math:`P^{1/2}` when preconditioned (Fig. 12, 17).
      instant_gap: per record, :math:`f(w + \eta_{oe} u) - f(w + \eta_{qg} u)` for
        :math:`u = -\nabla f(w)` (positive: the greedy step decreases the loss more; Fig. 16);
        NaN unless the run asked for it.
    """

    loss: np.ndarray
    learning_rate: np.ndarray
    grad_norm: np.ndarray
    internals: dict[str, np.ndarray]
    record_step: np.ndarray
    record_loss: np.ndarray
    sharpness: np.ndarray
    sharpness_converged: np.ndarray
    record_learning_rate: np.ndarray
    preconditioned: bool
    initial_sharpness: float
    seconds: float
    update_cosine: np.ndarray = np.zeros(0)
    alignment: np.ndarray = np.zeros(0)
    instant_gap: np.ndarray = np.zeros(0)

    @property
    def eos(self) -> np.ndarray:
        r""":math:`\eta\lambda_{\max}` at the record steps (2 is the edge of stability)."""
        return self.record_learning_rate * self.sharpness


class TrainResult(NamedTuple):
    """The output of :func:`train`: the history first, the final iterate beside it.

    Attributes:
      history: the :class:`History`.
      params: :math:`w_T`.
      opt_state: the optimizer state after the last step.
    """

    history: History
    params: PyTree
    opt_state: Any


def last_iterates_loss(history: History, last: int = 5) -> float:
    """Mean loss of the last ``last`` iterates, the selection rule of appendix C.3.

    A run whose last losses are not finite scores ``inf``, so it is never selected.

    Args:
      history: a :class:`History`.
      last: number of final iterates averaged (5 in the paper).

    Returns:
      The mean as a Python float.

    Example:
      >>> import numpy as np
      >>> from cdat_core.lab import train
      >>> h = train.History(np.arange(10.0), *([np.zeros(10)] * 2), {}, *([np.zeros(0)] * 5),
      ...                   False, 0.0, 0.0)
      >>> train.last_iterates_loss(h)
      7.0
    """
    tail = np.asarray(history.loss[-last:], np.float64)
    value = float(np.mean(tail)) if tail.size else float("nan")
    return value if np.isfinite(value) else float("inf")
