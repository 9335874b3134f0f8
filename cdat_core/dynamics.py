r"""Simplified models of learning rate and sharpness (Roulet et al., 2024, Sec. 2.3, 3.2, App. A).

Three discrete dynamical systems from "Stepping on the Edge: Curvature Aware Learning Rate
Tuners" (Roulet, Agarwala, Grill, Swirszcz, Blondel, Pedregosa, 2024), each simulated with one
``lax.scan``:

* :func:`simulate_constant_learning_rate`: the self-stabilization model of Damian et al. (2022),
  eq (4), with a fixed learning rate (Fig. 4, blue);
* :func:`simulate_classical_tuner`: eq (4) with :math:`\eta_t = 2(1 - \epsilon)/\lambda_t`,
  eq (6), the paper's model of line searches and greedy tuners (Fig. 4, orange);
* :func:`simulate_cdat`: the two-eigenvalue CDAT model, eqs (9)-(10) with the
  :math:`(y, p)` recursion (5) (Figs. 9 and 11).

Notation: :math:`\lambda_t` is the top Hessian eigenvalue (the sharpness), :math:`x_t` the
projection of the parameters on its (fixed) eigenvector and :math:`p_t = x_t^2`;
:math:`\nu` a second, fixed eigenvalue and :math:`g_t` the squared projection on its
eigenvector; :math:`\eta_t` the learning rate; :math:`y_t = \eta_t \lambda_t - 2` the
normalized centered sharpness (:math:`y = 0` is the edge of stability, EOS);
:math:`a = -\nabla\lambda(w)^\top \nabla f(w)` the rate of progressive sharpening and
:math:`b = \|\nabla\lambda(w)\|^2` the strength of the non-linear feedback, both constant.

Conventions shared by the three simulators:

* They return a :class:`Trajectory` of arrays of length ``num_steps + 1``; index :math:`t`
  holds the state at step :math:`t` (index 0 the initial conditions), and
  ``learning_rate[t]`` is the :math:`\eta_t` used to go from step :math:`t` to :math:`t + 1`.
* ``num_steps`` is structural (a static argument); every number is traced, so new numbers
  never recompile. Each function is jitted; it also composes with ``vmap`` over the numbers
  (all numbers must be scalars).
* Arithmetic is in the widest float dtype of the inputs, at least float32 (Python floats count
  as JAX's default float: float64 under ``jax_enable_x64``).
* **Divergence.** The maps are polynomial or rational, so a diverging run overflows within a
  few steps of leaving the region of interest, and the next step would turn ``inf - inf`` into
  NaN. Nothing is clamped: each candidate state is checked, and the first step whose new
  state (or any reported quantity) is not finite is rejected. From that step on the state is
  held at its last finite values and ``diverged`` is True; ``diverged`` never switches back,
  so ``trajectory.diverged[-1]`` says whether the run diverged and
  ``argmax(trajectory.diverged)`` at which step. The last finite values before the flag are
  typically huge (:math:`|x|` of 1e100 or more), so plots show the blow-up, but values at flagged
  steps are **not** part of the dynamics. Outputs are NaN only if an initial condition is.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from cdat_core import _tree

__all__ = [
    "Trajectory",
    "simulate_cdat",
    "simulate_classical_tuner",
    "simulate_constant_learning_rate",
]

ArrayLike = Any
_State = tuple[jax.Array, ...]


class Trajectory(NamedTuple):
    r"""Trajectories of a simplified model, each of shape ``(num_steps + 1,)``.

    Attributes:
      learning_rate: :math:`\eta_t`.
      sharpness: :math:`\lambda_t`, the top eigenvalue.
      y: :math:`y_t = \eta_t \lambda_t - 2` (0 at the edge of stability).
      p: :math:`p_t = x_t^2`, the squared projection on the top eigenvector.
      g: :math:`g_t`, the squared projection on the second eigenvector (eigenvalue
        :math:`\nu`); identically zero for the single-eigenvalue models of eqs (4) and (6).
      diverged: bool; True from the first step whose update was not finite. Values at
        flagged steps are frozen copies of the last finite state, not dynamics.
    """

    learning_rate: jax.Array
    sharpness: jax.Array
    y: jax.Array
    p: jax.Array
    g: jax.Array
    diverged: jax.Array


def _scalars(names: tuple[str, ...], values: tuple[ArrayLike, ...]) -> tuple[jax.Array, ...]:
    """Cast the inputs to their common float dtype (at least float32); require scalars."""
    for name, value in zip(names, values, strict=True):
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"{name} must be a scalar, got shape {jnp.shape(value)}; vmap over batches."
            )
    dtype = _tree.accumulation_dtype(*(jnp.result_type(v) for v in values))
    return tuple(jnp.asarray(v).astype(dtype) for v in values)


def _check_num_steps(num_steps: int) -> None:
    try:
        valid = operator.index(num_steps) >= 0
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}.")


def _divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, with a zero denominator giving ``inf`` (flagged later).

    Double ``where``: the division never sees a zero, so neither values nor gradients are
    NaN; the infinite branch is then caught by the finiteness check of :func:`_simulate`.
    """
    nonzero = denominator != 0
    safe = jnp.where(nonzero, denominator, 1.0)
    return jnp.where(nonzero, numerator / safe, jnp.inf)


def _simulate(
    step: Callable[[_State], _State],
    record: Callable[[_State], tuple[jax.Array, ...]],
    state0: _State,
    num_steps: int,
) -> Trajectory:
    """Iterate ``step`` with ``lax.scan``, rejecting the first non-finite update for good.

    ``record(state)`` gives ``(learning_rate, sharpness, y, p, g)`` at that state; it is
    elementwise, so it is applied once to the stacked states (every index, frozen ones too,
    goes through the same computation).
    """
    diverged0 = ~(_tree.all_finite(state0) & _tree.all_finite(record(state0)))

    def body(carry: tuple[_State, jax.Array], _: None) -> tuple[Any, Any]:
        state, diverged = carry
        candidate = step(state)
        ok = ~diverged & _tree.all_finite(candidate) & _tree.all_finite(record(candidate))
        state = _tree.where(ok, candidate, state)
        return (state, ~ok), (state, ~ok)

    _, (states, flags) = lax.scan(body, (state0, diverged0), None, length=num_steps)
    states = tuple(jnp.concatenate([s0[None], s]) for s0, s in zip(state0, states, strict=True))
    diverged = jnp.concatenate([diverged0[None], flags])
    learning_rate, sharpness, y, p, g = (
        jnp.broadcast_to(f, diverged.shape) for f in record(states)
    )
    return Trajectory(learning_rate, sharpness, y, p, g, diverged)


@functools.partial(jax.jit, static_argnames=("num_steps",))
def simulate_constant_learning_rate(
    a: ArrayLike,
    b: ArrayLike,
    learning_rate: ArrayLike,
    sharpness0: ArrayLike,
    x0: ArrayLike,
    *,
    num_steps: int,
) -> Trajectory:
    r"""Self-stabilization model, eq (4), with a constant learning rate (Fig. 4, blue).

    .. math::

        x_{t+1} = (1 - \eta \lambda_t)\, x_t, \qquad
        \lambda_{t+1} = \eta\,(a - b\, x_t^2) + \lambda_t,

    the model of Damian et al. (2022, "Self-stabilization: the implicit bias of gradient
    descent at the edge of stability") used in Section 2.3 of Roulet et al. (2024). While
    :math:`\eta\lambda_t < 2`, :math:`|x_t|` shrinks and :math:`\lambda_t` grows by
    :math:`\eta a`; past the edge, :math:`|x_t|` grows until :math:`b x_t^2 > a` pulls
    :math:`\lambda_t` back down.

    What the discrete model does (measured at the paper's Fig. 4 parameters
    :math:`a = 3\cdot10^{-2}`, :math:`b = 3\cdot10^{-1}`, :math:`\eta = 1`, float64):

    * :math:`\lambda_t \equiv 2/\eta`, :math:`x_t = (-1)^t \sqrt{a/b}` is an exact period-2
      orbit. Linearising in :math:`(\log p, y)` around it gives the Jacobian
      :math:`\bigl(\begin{smallmatrix}1 & 2\\ -\eta^2 a & 1\end{smallmatrix}\bigr)`:
      an explicit-Euler discretisation of a neutral centre, with eigenvalues
      :math:`1 \pm i\eta\sqrt{2a}`. Nearby orbits rotate around it with a period of about
      :math:`2\pi/\arctan(\eta\sqrt{2a})` steps (26 here) and their amplitude **grows** by
      :math:`\sqrt{1 + 2\eta^2 a}` per step (3 % here). So :math:`\lambda_t` oscillates
      around :math:`2/\eta` only transiently.
    * Oscillation around :math:`2/\eta` over the figure's 100 steps: from
      :math:`(\lambda_0, x_0) = (1.98, 0.3)` the mean of :math:`\lambda_t` over steps 50-100 is
      2.03 (within 2 % of :math:`2/\eta`), :math:`\lambda_t` crosses :math:`2/\eta` three
      times there and stays in :math:`[1.76, 2.32]`; :math:`(2.0, 0.3)`, :math:`(2.02, 0.3)`
      and :math:`(2.0, 0.35)` behave alike (means 1.99, 1.97, 1.95). The paper gives no
      :math:`x_0`; we use :math:`x_0 = 0.3` and :math:`\lambda_0 = 1.98`, just below the edge.
    * **Where it diverges instead.** Those same runs become non-finite at steps 173, 196, 293
      and 243. On the grid :math:`\lambda_0 \in \{0.05, 0.1, \dots, 4\}`,
      :math:`x_0 \in [10^{-3}, 3]` (40 log-spaced values) every run diverged by step 363,
      except :math:`\lambda_0 = 1/\eta`: then :math:`x_1 = 0` exactly and :math:`\lambda_t`
      grows linearly for ever (the same happens whenever some :math:`\lambda_t` lands exactly
      on :math:`1/\eta`, e.g. :math:`(\lambda_0, x_0) = (3.67, 3)`). It diverges within 25
      steps when :math:`\lambda_0 \ge 2.8` (:math:`|1 - \eta\lambda_0| \ge 1.8` blows
      :math:`x` up and the :math:`-b x^2` feedback overshoots to large negative
      :math:`\lambda`), and within 15 steps when :math:`x_0 \ge 2.5` (:math:`\lambda_1 =
      \lambda_0 + \eta(a - b x_0^2)` is pushed far below 0), for any other
      :math:`\lambda_0` in the grid. Starting far below the edge (:math:`\lambda_0 \le 0.9`)
      makes :math:`p` tiny before the edge is reached, so the first overshoot is large and the
      run diverges after one or two swings (steps 10 to 174). The paper's Fig. 4 oscillation
      is therefore a finite-horizon picture of (4).

    Args:
      a: sharpening rate :math:`a`.
      b: feedback strength :math:`b \ge 0`.
      learning_rate: the constant :math:`\eta > 0`.
      sharpness0: :math:`\lambda_0`.
      x0: :math:`x_0`, the initial projection on the top eigenvector.
      num_steps: number of updates (static).

    Returns:
      A :class:`Trajectory`; ``learning_rate`` is :math:`\eta` repeated, ``p`` is
      :math:`x_t^2`, ``g`` is zero. See the module docstring for ``diverged``.

    Example:
      Fig. 4 (blue): :math:`\lambda_t` oscillates around :math:`2/\eta = 2` for 100 steps,
      and diverges later.

      >>> import jax.numpy as jnp
      >>> from cdat_core import dynamics
      >>> traj = dynamics.simulate_constant_learning_rate(3e-2, 3e-1, 1.0, 1.98, 0.3,
      ...                                                 num_steps=100)
      >>> print(f"{float(traj.sharpness[50:].mean()):.1f}", bool(traj.diverged[-1]))
      2.0 False
      >>> traj = dynamics.simulate_constant_learning_rate(3e-2, 3e-1, 1.0, 3.0, 0.3,
      ...                                                 num_steps=100)
      >>> bool(traj.diverged[-1]), bool(jnp.all(jnp.isfinite(traj.sharpness)))
      (True, True)
    """
    _check_num_steps(num_steps)
    a, b, eta, lam0, x0 = _scalars(
        ("a", "b", "learning_rate", "sharpness0", "x0"), (a, b, learning_rate, sharpness0, x0)
    )

    def step(state: _State) -> _State:
        x, lam = state
        return (1.0 - eta * lam) * x, eta * (a - b * x * x) + lam

    def record(state: _State) -> tuple[jax.Array, ...]:
        x, lam = state
        return eta, lam, eta * lam - 2.0, x * x, jnp.zeros_like(x)

    return _simulate(step, record, (x0, lam0), num_steps)


@functools.partial(jax.jit, static_argnames=("num_steps",))
def simulate_classical_tuner(
    a: ArrayLike,
    b: ArrayLike,
    eps: ArrayLike,
    sharpness0: ArrayLike,
    x0: ArrayLike,
    *,
    num_steps: int,
) -> Trajectory:
    r"""Model of classical tuners, eq (4) with eq (6): :math:`\eta_t = 2(1-\epsilon)/\lambda_t`.

    .. math::

        \eta_t = \frac{2(1 - \epsilon)}{\lambda_t}, \qquad
        x_{t+1} = (1 - \eta_t \lambda_t)\, x_t, \qquad
        \lambda_{t+1} = \eta_t\,(a - b\, x_t^2) + \lambda_t,

    Section 2.3 of Roulet et al. (2024): line searches and greedy tuners equilibrate just below
    the edge, :math:`y_t = -2\epsilon` for every :math:`t`. Then :math:`p_t = x_t^2` decays
    geometrically, :math:`p_{t+1} = (1 - 2\epsilon)^2 p_t`, the feedback :math:`-b p_t`
    vanishes, and the sharpness grows without bound (:math:`\lambda_t^2` about linearly in
    :math:`t`) while :math:`\eta_t` decays: runaway sharpening (Fig. 4, orange; Fig. 10). If
    :math:`\lambda_0 > 0` and :math:`a > b x_0^2`, then :math:`a - b x_t^2 > 0` at every step
    (as :math:`p_t` only decreases for :math:`0 < \epsilon < 1`), so :math:`\lambda_t` is
    increasing and :math:`\eta_t` decreasing.

    The paper's Fig. 4 curve "η = 1.9/λ_max" is :math:`\epsilon = 0.05` here
    (:math:`y = -0.1`), with :math:`a = 1`, :math:`b = 0.5`, :math:`\eta_0 = 1`, i.e.
    :math:`\lambda_0 = 1.9`; :math:`x_0` is not given, we use 0.3. (Appendix A.2 writes
    :math:`\epsilon = 0.1` for the same curve, apparently meaning :math:`y = -\epsilon`.)

    Args:
      a: sharpening rate :math:`a`.
      b: feedback strength :math:`b \ge 0`.
      eps: :math:`\epsilon`, the relative distance below the edge (:math:`y = -2\epsilon`).
      sharpness0: :math:`\lambda_0 > 0`; a :math:`\lambda_t = 0` makes :math:`\eta_t` and
        :math:`y_t` infinite and the run is flagged ``diverged`` there.
      x0: :math:`x_0`.
      num_steps: number of updates (static).

    Returns:
      A :class:`Trajectory` with ``g`` zero. See the module docstring for ``diverged``.

    Example:
      Fig. 4 (orange): the sharpness rises at every step, the learning rate falls.

      >>> import jax.numpy as jnp
      >>> from cdat_core import dynamics
      >>> traj = dynamics.simulate_classical_tuner(1.0, 0.5, 0.05, 1.9, 0.3, num_steps=100)
      >>> bool(jnp.all(jnp.diff(traj.sharpness) > 0))
      True
      >>> bool(jnp.all(jnp.diff(traj.learning_rate) < 0))
      True
      >>> print(f"{float(traj.y[-1]):.3f} {float(traj.learning_rate[-1]):.2f}")
      -0.100 0.10
    """
    _check_num_steps(num_steps)
    a, b, eps, lam0, x0 = _scalars(
        ("a", "b", "eps", "sharpness0", "x0"), (a, b, eps, sharpness0, x0)
    )

    def learning_rate(lam: jax.Array) -> jax.Array:
        return _divide(2.0 * (1.0 - eps), lam)

    def step(state: _State) -> _State:
        x, lam = state
        eta = learning_rate(lam)
        return (1.0 - eta * lam) * x, eta * (a - b * x * x) + lam

    def record(state: _State) -> tuple[jax.Array, ...]:
        x, lam = state
        eta = learning_rate(lam)
        y = jnp.where(jnp.isfinite(eta), eta * lam - 2.0, jnp.inf)  # lam = 0: no edge, no NaN
        return eta, lam, y, x * x, jnp.zeros_like(x)

    return _simulate(step, record, (x0, lam0), num_steps)


@functools.partial(jax.jit, static_argnames=("num_steps",))
def simulate_cdat(
    a: ArrayLike,
    b: ArrayLike,
    nu: ArrayLike,
    sigma: ArrayLike,
    sharpness0: ArrayLike,
    learning_rate0: ArrayLike,
    p0: ArrayLike,
    g0: ArrayLike,
    *,
    num_steps: int,
) -> Trajectory:
    r"""Two-eigenvalue model of the CDAT tuner, eqs (9)-(10) with the recursion (5).

    Section 3.2 and Appendix A of Roulet et al. (2024). With :math:`H_t = \lambda_t v v^\top
    + \nu v_\perp v_\perp^\top` and gradient descent, the CDAT rule (8),
    :math:`\sigma\, \bar w^\top H^2 \bar w / \bar w^\top H^3 \bar w`, reads (9), and the state
    :math:`(\eta_t, y_t, p_t, g_t)` evolves as

    .. math::

        \eta_{t+1} &= \sigma\, \frac{\lambda_t^2 p_t + \nu^2 g_t}{|\lambda_t^3 p_t + \nu^3 g_t|},
        \qquad \lambda_t = \frac{y_t + 2}{\eta_t}, \\
        p_{t+1} &= (1 + y_t)^2 p_t, \qquad g_{t+1} = (1 - \eta_t \nu)^2 g_t, \\
        y_{t+1} &= \eta_{t+1}\,[\eta_t (a - b p_t)] + \frac{\eta_{t+1}}{\eta_t}\, y_t
                 + 2\left(\frac{\eta_{t+1}}{\eta_t} - 1\right).

    The :math:`y` recursion (5) is eq (4) rewritten: :math:`\eta_t\lambda_{t+1} =
    \eta_t^2(a - b p_t) + \eta_t\lambda_t` and :math:`y_{t+1} = (\eta_{t+1}/\eta_t)
    \,\eta_t\lambda_{t+1} - 2`. So the sharpness follows eq (4),
    :math:`\lambda_{t+1} = \lambda_t + \eta_t(a - b p_t)`; it is reported as
    :math:`(y_t + 2)/\eta_t`. (Appendix A's eq (13) prints :math:`y_{t+1} =
    \frac{\eta_{t+1}}{\eta_t}[\eta_t\lambda_{t+1} - 2] + 2`, which does not give (5); eq (5)
    itself is consistent with (4) and is what is implemented.)

    Choices where the paper is silent:

    * The rule uses the state at step :math:`t` to set :math:`\eta_{t+1}`, as eq (10) is
      written, so :math:`\eta_0` is a free initial condition (0.05 in Fig. 9).
    * The denominator is :math:`|\lambda^3 p + \nu^3 g|`, as in the CDAT rule (8); it equals
      (9) whenever :math:`\lambda_t \ge 0` and keeps :math:`\eta \ge 0` if the model drives
      :math:`\lambda_t` negative.
    * If :math:`\lambda_t^2 p_t + \nu^2 g_t = 0` (e.g. :math:`p_0 = g_0 = 0`, the minimum),
      (9) is 0/0 and the learning rate is kept, :math:`\eta_{t+1} = \eta_t`; :math:`\lambda_t`
      then grows linearly by :math:`\eta a`. Floating point gets there too: with
      :math:`\sigma = 1` at the Fig. 9 parameters the greedy steps nearly annihilate
      :math:`x` and :math:`z`, :math:`p` and :math:`g` underflow to 0 by step 108, and from
      then on :math:`\eta \approx 1/\nu` and :math:`\lambda_t` grows by 0.5 per step.
    * A zero denominator with a positive numerator flags the run ``diverged``; so does
      :math:`\eta_0 = 0`, from step 0 (:math:`\lambda_0 = (y_0 + 2)/\eta_0` and the ratio
      in (5) are undefined).

    Measured at the Fig. 9/11 parameters (:math:`a = 0.05`, :math:`b = 0.1`,
    :math:`\nu = 0.1`, :math:`\lambda_0 = 18`, :math:`\eta_0 = 0.05`, :math:`p_0 = g_0 = 4`,
    600 steps, float64): with :math:`\sigma = 2`, :math:`y_t` stays in
    :math:`[3.7\cdot10^{-4}, 4.6\cdot10^{-4}]` over steps 300-600 and :math:`p_t` grows
    (0.082 to 0.104): :math:`p` no longer decays. With :math:`\sigma = 1.9`, :math:`y_t`
    settles near :math:`-0.010` and :math:`p_t` decays (:math:`4\cdot10^{-6}` to
    :math:`9\cdot10^{-9}`) with :math:`p_t/g_t` nearly constant (Fig. 11), while
    :math:`\lambda_t` sharpens faster than with :math:`\sigma = 2`.

    Args:
      a: sharpening rate :math:`a`.
      b: feedback strength :math:`b \ge 0`.
      nu: the second eigenvalue :math:`\nu \ge 0` (fixed).
      sigma: the CDAT scale :math:`\sigma` (2: on edge, eq 7; 1: greedy, eq 3).
      sharpness0: :math:`\lambda_0`.
      learning_rate0: :math:`\eta_0 > 0`.
      p0: :math:`p_0 \ge 0`, squared projection on the top eigenvector.
      g0: :math:`g_0 \ge 0`, squared projection on the second eigenvector.
      num_steps: number of updates (static).

    Returns:
      A :class:`Trajectory`. See the module docstring for ``diverged``.

    Example:
      Fig. 9: with :math:`\sigma = 2` the feedback holds :math:`y` at the edge.

      >>> from cdat_core import dynamics
      >>> traj = dynamics.simulate_cdat(5e-2, 1e-1, 0.1, 2.0, 18.0, 0.05, 4.0, 4.0,
      ...                               num_steps=600)
      >>> abs(float(traj.y[-1])) < 1e-2, bool(traj.p[-1] > traj.p[300])
      (True, True)
    """
    _check_num_steps(num_steps)
    a, b, nu, sigma, lam0, eta0, p0, g0 = _scalars(
        ("a", "b", "nu", "sigma", "sharpness0", "learning_rate0", "p0", "g0"),
        (a, b, nu, sigma, sharpness0, learning_rate0, p0, g0),
    )

    def step(state: _State) -> _State:
        eta, y, p, g = state
        lam = _divide(y + 2.0, eta)
        numerator = lam * lam * p + nu * nu * g
        denominator = jnp.abs(lam * lam * lam * p + nu * nu * nu * g)
        eta_next = jnp.where(numerator != 0, sigma * _divide(numerator, denominator), eta)
        ratio = _divide(eta_next, eta)
        y_next = eta_next * (eta * (a - b * p)) + ratio * y + 2.0 * (ratio - 1.0)
        return eta_next, y_next, (1.0 + y) ** 2 * p, (1.0 - eta * nu) ** 2 * g

    def record(state: _State) -> tuple[jax.Array, ...]:
        eta, y, p, g = state
        return eta, _divide(y + 2.0, eta), y, p, g

    state0 = (eta0, eta0 * lam0 - 2.0, p0, g0)
    return _simulate(step, record, state0, num_steps)
