r"""The verify job's measurements that are not training runs: identities, models, costs.

Each function returns plain data (dicts of floats and lists) in the layout that
:func:`cdat_core.lab.claims.evaluate_claims` reads.

- :func:`identity_checks`: the on-edge and greedy learning rates of eqs (3) and (7) on a
  quadratic, through :func:`cdat_core.scale_by_cdat` itself, against :math:`1/\lambda` and
  :math:`2/\lambda` computed independently in float64 NumPy.
- :func:`model_trajectories`: :mod:`cdat_core.dynamics` at the parameters of Fig. 4 and 9.
- :func:`cost_ratios`: curvature vs objective and CDAT step vs plain step, in XLA-counted
  flops and memory (:func:`cdat_core.lab.costs.xla_costs`) and in wall time
  (:func:`cdat_core.lab.costs.wall_time_ratios`), on a lab problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import cdat_core as cc
from cdat_core import _tree, dynamics
from cdat_core.lab import costs, problems, tuners

__all__ = ["cost_ratios", "identity_checks", "model_trajectories"]


def identity_checks(*, seed: int = 0, dim: int = 20, num_directions: int = 16) -> dict[str, Any]:
    r"""On-edge (σ=2) and greedy (σ=1) learning rates on a quadratic, vs closed forms.

    The quadratic has eigenvalues log-spaced in :math:`[0.1, 10]`. At :math:`w` = the top
    eigenvector, :math:`u = -\nabla f(w) = -\lambda_{\max} w`, so eq (7) gives
    :math:`2/\lambda_{\max}` and eq (3) :math:`1/\lambda_{\max}`. At random :math:`w`, the
    on-edge rate lies in :math:`[2/\lambda_{\max}, 2/\lambda_{\min}]` and the quadratic model
    returns to :math:`f(w)`: ``model_gap`` is
    :math:`|q(\eta) - f(w)| / |\eta \nabla f^\top u|`, computed in float64 from the matrix.

    Args:
      seed: seed of the basis and of the random points.
      dim: dimension.
      num_directions: number of random points.

    Returns:
      ``sharpness``, ``smallest_eigenvalue``, ``on_edge_aligned``, ``greedy_aligned``,
      ``on_edge_random`` (list), ``model_gap_random`` (list).

    Example:
      >>> from cdat_core.lab import measurements
      >>> out = measurements.identity_checks(dim=4, num_directions=2)
      >>> abs(out["on_edge_aligned"] * out["sharpness"] - 2) < 1e-5
      True
    """
    q = problems.quadratic(np.geomspace(10.0, 0.1, dim).tolist(), seed=seed)
    matrix = np.asarray(q.matrix, np.float64)
    lam = np.linalg.eigvalsh(matrix)

    def rate(sigma: float, w: jax.Array) -> float:
        opt = tuners.make("cdat", sigma=sigma)
        grad = jax.grad(q.loss)(w, q.matrix)
        _, state = opt.update(grad, opt.init(w), w, value_fn=lambda p: q.loss(p, q.matrix))
        return float(optax.tree.get(state, "learning_rate"))

    top = q.eigenvectors[:, 0]
    points = np.random.default_rng(seed + 1).standard_normal((num_directions, dim))
    on_edge, gaps = [], []
    for x in points:
        w = jnp.asarray(x, jnp.float32)
        eta = rate(2.0, w)
        g = matrix @ np.asarray(w, np.float64)
        slope, curvature = -g @ g, g @ matrix @ g
        gaps.append(abs(eta * slope + 0.5 * eta**2 * curvature) / abs(eta * slope))
        on_edge.append(eta)
    return {
        "sharpness": float(lam[-1]),
        "smallest_eigenvalue": float(lam[0]),
        "on_edge_aligned": rate(2.0, top),
        "greedy_aligned": rate(1.0, top),
        "on_edge_random": on_edge,
        "model_gap_random": gaps,
    }


def _trajectory(traj: dynamics.Trajectory) -> dict[str, list[Any]]:
    return {k: np.asarray(v).tolist() for k, v in traj._asdict().items()}


def model_trajectories() -> dict[str, dict[str, list[Any]]]:
    r"""The simplified models at the paper's figure parameters (float32).

    - ``constant``: eq (4), Fig. 4: :math:`a = 0.03`, :math:`b = 0.3`, :math:`\eta = 1`,
      :math:`\lambda_0 = 1.98`, :math:`x_0 = 0.3` (the paper gives no :math:`x_0`; this is
      :mod:`cdat_core.dynamics`' documented choice), 100 steps;
    - ``classical``: eq (6), Fig. 4: :math:`a = 1`, :math:`b = 0.5`,
      :math:`\eta = 1.9/\lambda` (:math:`\epsilon = 0.05`), :math:`\lambda_0 = 1.9`,
      :math:`x_0 = 0.3`, 100 steps;
    - ``cdat_2``, ``cdat_1.9``: eqs (9)-(10), Fig. 9: :math:`a = 0.05`, :math:`b = 0.1`,
      :math:`\nu = 0.1`, :math:`\lambda_0 = 18`, :math:`\eta_0 = 0.05`,
      :math:`p_0 = g_0 = 4`, 600 steps.

    Returns:
      name -> trajectory dict (``learning_rate``, ``sharpness``, ``y``, ``p``, ``g``,
      ``diverged`` lists).

    Example:
      >>> from cdat_core.lab import measurements
      >>> sorted(measurements.model_trajectories())
      ['cdat_1.9', 'cdat_2', 'classical', 'constant']
    """
    return {
        "constant": _trajectory(
            dynamics.simulate_constant_learning_rate(3e-2, 3e-1, 1.0, 1.98, 0.3, num_steps=100)
        ),
        "classical": _trajectory(
            dynamics.simulate_classical_tuner(1.0, 0.5, 0.05, 1.9, 0.3, num_steps=100)
        ),
        "cdat_2": _trajectory(
            dynamics.simulate_cdat(5e-2, 1e-1, 0.1, 2.0, 18.0, 0.05, 4.0, 4.0, num_steps=600)
        ),
        "cdat_1.9": _trajectory(
            dynamics.simulate_cdat(5e-2, 1e-1, 0.1, 1.9, 18.0, 0.05, 4.0, 4.0, num_steps=600)
        ),
    }


def cost_ratios(
    problem: Any,
    *,
    description: str,
    rounds: int = 7,
    number: int = 5,
) -> dict[str, Any]:
    r"""Curvature vs objective and CDAT step vs GD step: XLA counts and wall time.

    The steps are those of the lab's loop (:func:`cdat_core.lab.train.sweep`): a value and
    gradient, then ``optax.sgd`` at a constant learning rate, or :func:`cdat_core.cdat`
    (:math:`\sigma = 2`) reusing them. The direction :math:`u` is the negative gradient at
    the initial point. Flops and bytes come from :func:`cdat_core.lab.costs.xla_costs`
    (compiled, never run); wall times from :func:`cdat_core.lab.costs.wall_time_ratios` on
    separately compiled copies, timed in interleaved rounds after warm-up, blocking on the
    results. Memory is compared as the bytes XLA reserves for arguments, outputs and scratch
    (the objective alone may need no scratch at all), and, forward-over-forward against a
    Hessian-vector product (forward over reverse), as scratch bytes.

    Args:
      problem: a digits problem (``loss(params, inputs, targets)``, ``params``, ``inputs``,
        ``targets``).
      description: what the report says the numbers were measured on.
      rounds: timed rounds.
      number: calls per callable per round.

    Returns:
      A dict with ``description``, ``ratios`` (keys ``"directional_curvature/objective
      flops"``, ``"directional_curvature/objective bytes"``, ``"directional_curvature/hvp_dot
      temp_bytes"``, ``"directional_curvature/objective wall"``, ``"sgd+cdat/sgd flops"``,
      ``"sgd+cdat/sgd wall"``), ``counts``, ``seconds`` and ``spread``.

    Example:
      >>> from cdat_core.lab import measurements, problems
      >>> p = problems.subset(problems.digits_mlp((8,)), 32)
      >>> out = measurements.cost_ratios(p, description="tiny", rounds=2, number=1)
      >>> out["ratios"]["directional_curvature/objective flops"] > 1
      True
    """
    loss, params, data = problem.loss, problem.params, (problem.inputs, problem.targets)
    direction = jax.tree.map(jnp.negative, jax.grad(loss)(params, *data))
    plain, tuned = optax.sgd(1e-2), cc.cdat(optax.sgd(1.0), 2.0)

    def objective(w: Any, u: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return loss(w, x, y)

    def curvature(w: Any, u: Any, x: jax.Array, y: jax.Array) -> Any:
        return cc.directional_curvature(loss, w, u, x, y)

    def hvp_dot(w: Any, u: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return _tree.vdot(u, cc.hvp(loss, w, u, x, y))

    def step(opt: optax.GradientTransformation, extra: bool) -> Callable[..., Any]:
        # one training step of the lab's loop (train.sweep), value and gradient reused
        def run(w: Any, state: Any, x: jax.Array, y: jax.Array) -> Any:
            def fun(p: Any) -> jax.Array:
                return loss(p, x, y)

            value, grad = jax.value_and_grad(fun)(w)
            kw = {"value_fn": fun, "value": value, "grad": grad} if extra else {}
            updates, state = opt.update(grad, state, w, **kw)
            return optax.apply_updates(w, updates), state, value

        return run

    args = (params, direction, *data)
    fns: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "objective": (objective, args),
        "directional_curvature": (curvature, args),
        "hvp_dot": (hvp_dot, args),
        "sgd": (step(plain, False), (params, plain.init(params), *data)),
        "sgd+cdat": (step(tuned, True), (params, tuned.init(params), *data)),
    }
    counted = {name: costs.xla_costs(fn, *args) for name, (fn, args) in fns.items()}
    compiled = {
        name: jax.jit(fn).lower(*args).compile()
        for name, (fn, args) in fns.items()
        if name != "hvp_dot"
    }

    def call(name: str) -> Callable[[], Any]:
        fn, args = compiled[name], fns[name][1]
        return lambda: jax.block_until_ready(fn(*args))

    wall_curvature = costs.wall_time_ratios(
        {n: call(n) for n in ("objective", "directional_curvature")},
        "objective",
        rounds=rounds,
        number=number,
    )
    wall_step = costs.wall_time_ratios(
        {n: call(n) for n in ("sgd", "sgd+cdat")}, "sgd", rounds=rounds, number=number
    )
    cur = costs.cost_ratios(counted["directional_curvature"], counted["objective"])
    stp = costs.cost_ratios(counted["sgd+cdat"], counted["sgd"])

    def total_bytes(name: str) -> float:
        c = counted[name]
        return float(c.argument_bytes + c.output_bytes + c.temp_bytes)

    return {
        "description": description,
        "ratios": {
            "directional_curvature/objective flops": cur["flops"],
            "directional_curvature/objective bytes": total_bytes("directional_curvature")
            / total_bytes("objective"),
            "directional_curvature/hvp_dot temp_bytes": counted["directional_curvature"].temp_bytes
            / max(counted["hvp_dot"].temp_bytes, 1),
            "directional_curvature/objective wall": wall_curvature["directional_curvature"].ratio,
            "sgd+cdat/sgd flops": stp["flops"],
            "sgd+cdat/sgd wall": wall_step["sgd+cdat"].ratio,
        },
        "counts": {name: c._asdict() for name, c in counted.items()},
        "seconds": {
            "objective": wall_curvature["objective"].seconds,
            "directional_curvature": wall_curvature["directional_curvature"].seconds,
            "sgd": wall_step["sgd"].seconds,
            "sgd+cdat": wall_step["sgd+cdat"].seconds,
        },
        "spread": {
            "directional_curvature/objective wall": wall_curvature["directional_curvature"].spread,
            "sgd+cdat/sgd wall": wall_step["sgd+cdat"].spread,
        },
    }
