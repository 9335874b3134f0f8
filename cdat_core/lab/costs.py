r"""What curvature costs: XLA-counted flops and memory, wall-time ratios, a regression gate.

The paper (Roulet et al., 2024, Appendix C.3) claims that the curvature
:math:`u^\top \nabla^2 f(w) u`, computed as a JVP of a JVP, costs about 3x the objective
:math:`f(w)` in compute and memory, and that a CDAT step takes about 2x the wall time of a step
at a constant learning rate. This module measures such ratios on the machine at hand:

- :func:`xla_costs` compiles a function once (``jax.jit(fn).lower(*args).compile()``) and reads
  the flops XLA counts (``compiled.cost_analysis()``) and the bytes its buffer assignment
  reserves (``compiled.memory_analysis()``). Both are deterministic for a given JAX/XLA version
  and backend, so ratios of them can gate regressions in CI; nothing is run.
- :func:`wall_time_ratios` times already compiled callables in interleaved rounds, so that a
  candidate and its reference see the same machine load, and reports per-round ratios.
- :func:`ratio_table` and :func:`compare_ratios` turn counts into the ratios the benchmarks
  report and compare them with a committed baseline (``benchmarks/check_flop_ratios.py``).

The models and functions measured live in :mod:`cdat_core.lab.benchmark_models`.

Counting conventions: ``flops`` counts a multiply-add as 2 and elementwise ops as 1;
transcendental functions (``tanh``, ``exp``, ``log``) are counted apart, in
``transcendentals``. ``temp_bytes`` is the scratch memory XLA reserves beyond arguments and
outputs: the activations a reverse pass keeps live are counted there.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax

__all__ = [
    "RATIOS",
    "Costs",
    "RatioChange",
    "WallTime",
    "compare_ratios",
    "cost_ratios",
    "fused_step_flops",
    "ratio_table",
    "wall_time_ratios",
    "xla_costs",
]


class Costs(NamedTuple):
    """What XLA counts for one compiled function (see the module notes for conventions).

    Attributes:
      flops: floating-point operations (a multiply-add counts 2), transcendentals excluded.
      transcendentals: transcendental function evaluations (``exp``, ``log``, ``tanh``, ...).
      bytes_accessed: bytes read and written by all operations (a traffic estimate).
      temp_bytes: scratch bytes reserved beyond arguments and outputs.
      argument_bytes: bytes of the arguments.
      output_bytes: bytes of the outputs.
    """

    flops: float
    transcendentals: float
    bytes_accessed: float
    temp_bytes: int
    argument_bytes: int
    output_bytes: int

    @property
    def total_bytes(self) -> int:
        """Arguments, outputs and temps: the footprint of one call (no aliasing assumed)."""
        return self.argument_bytes + self.output_bytes + self.temp_bytes


def _cost_dict(compiled: Any) -> dict[str, float]:
    """``compiled.cost_analysis()`` as one dict (older JAX returns a list of one dict)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, Sequence):
        merged: dict[str, float] = {}
        for part in analysis:
            for key, value in part.items():
                merged[key] = merged.get(key, 0.0) + float(value)
        return merged
    return {key: float(value) for key, value in (analysis or {}).items()}


#: Compiler options for counting: the counts come from the HLO after XLA's optimisation passes,
#: which LLVM's code generation does not change, so on CPU the code is generated at LLVM -O0
#: (2-4x faster to compile; counts checked identical for every benchmark model and method).
_COUNT_OPTIONS: dict[str, dict[str, Any]] = {"cpu": {"xla_backend_optimization_level": 0}}


def xla_costs(fn: Callable[..., Any], *args: Any) -> Costs:
    """Compile ``fn`` for ``args`` and return the :class:`Costs` XLA counts; nothing runs.

    Args:
      fn: a JAX-traceable function (it is wrapped in ``jax.jit``); already jitted functions and
        ``jax.stages.Compiled`` objects are accepted too.
      *args: example arguments (arrays or ``jax.ShapeDtypeStruct``); only shapes and dtypes
        matter.

    Returns:
      ``Costs`` with the flops and transcendentals of ``compiled.cost_analysis()`` and the
      temp, argument and output bytes of ``compiled.memory_analysis()``; a count the backend
      does not report is 0. On CPU the function is compiled for counting only (LLVM -O0, which
      leaves the counts unchanged): time a separately compiled copy.

    Example:
      A matrix product of an ``(m, k)`` and a ``(k, n)`` matrix is ``2·m·n·k`` flops:

      >>> import jax.numpy as jnp
      >>> from cdat_core.lab import costs
      >>> a, b = jnp.ones((3, 4)), jnp.ones((4, 5))
      >>> c = costs.xla_costs(lambda a, b: a @ b, a, b)
      >>> c.flops, c.argument_bytes, c.output_bytes
      (120.0, 128, 60)

    """
    if isinstance(fn, jax.stages.Compiled):
        compiled = fn
    else:
        lowered = jax.jit(fn).lower(*args)
        compiled = lowered.compile(_COUNT_OPTIONS.get(jax.default_backend()))
    counts = _cost_dict(compiled)
    memory = compiled.memory_analysis()

    def mem(name: str) -> int:
        return int(getattr(memory, name, 0) or 0)

    return Costs(
        flops=counts.get("flops", 0.0),
        transcendentals=counts.get("transcendentals", 0.0),
        bytes_accessed=counts.get("bytes accessed", 0.0),
        temp_bytes=mem("temp_size_in_bytes"),
        argument_bytes=mem("argument_size_in_bytes"),
        output_bytes=mem("output_size_in_bytes"),
    )


def cost_ratios(costs: Costs, reference: Costs) -> dict[str, float]:
    """Ratios of ``costs`` to ``reference`` in flops, transcendentals and temp bytes.

    Args:
      costs: the candidate's :class:`Costs`.
      reference: the reference's (the objective, or a plain optimizer step).

    Returns:
      A dict with keys ``flops``, ``transcendentals``, ``flops_and_transcendentals``,
      ``temp_bytes`` and ``total_bytes``; a ratio whose reference count is 0 is ``nan``.

    Example:
      >>> from cdat_core.lab import costs
      >>> ref = costs.Costs(100.0, 0.0, 0.0, 64, 0, 4)
      >>> costs.cost_ratios(costs.Costs(300.0, 0.0, 0.0, 128, 0, 4), ref)["flops"]
      3.0

    """

    def ratio(a: float, b: float) -> float:
        return float(a) / float(b) if b else float("nan")

    return {
        "flops": ratio(costs.flops, reference.flops),
        "transcendentals": ratio(costs.transcendentals, reference.transcendentals),
        "flops_and_transcendentals": ratio(
            costs.flops + costs.transcendentals, reference.flops + reference.transcendentals
        ),
        "temp_bytes": ratio(costs.temp_bytes, reference.temp_bytes),
        "total_bytes": ratio(costs.total_bytes, reference.total_bytes),
    }


class WallTime(NamedTuple):
    """Wall time of one callable measured in interleaved rounds against a reference.

    Attributes:
      seconds: median seconds per call over the rounds.
      ratio: median over rounds of (this callable's time / the reference's time) in the same
        round; 1.0 exactly for the reference itself.
      spread: the interquartile range of the per-round ratios over their median: the run's
        noise (0 for the reference).
    """

    seconds: float
    ratio: float
    spread: float


def wall_time_ratios(
    calls: Mapping[str, Callable[[], Any]],
    reference: str,
    *,
    rounds: int = 7,
    number: int = 5,
    warmup: int = 2,
) -> dict[str, WallTime]:
    """Time zero-argument callables in interleaved rounds; return times and ratios.

    Each callable should run an already compiled function and block on its result (e.g.
    ``lambda: jax.block_until_ready(compiled(*args))``), so that neither tracing, compiling nor
    asynchronous dispatch is timed. Every callable is first called ``warmup`` times; then, in
    each of ``rounds`` rounds, each callable is timed over ``number`` consecutive calls in
    turn. Ratios are taken within a round, so machine load that drifts across rounds cancels.

    Args:
      calls: name -> zero-argument callable.
      reference: the name in ``calls`` that ratios are taken to.
      rounds: timed rounds (the median is over these).
      number: calls per callable per round.
      warmup: untimed calls of each callable before the first round.

    Returns:
      name -> :class:`WallTime`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from cdat_core.lab import costs
      >>> x = jnp.ones((64, 64))
      >>> once = jax.jit(lambda x: x @ x).lower(x).compile()
      >>> twice = jax.jit(lambda x: (x @ x) @ x).lower(x).compile()
      >>> times = costs.wall_time_ratios(
      ...     {"once": lambda: once(x).block_until_ready(),
      ...      "twice": lambda: twice(x).block_until_ready()},
      ...     reference="once", rounds=3, number=2)
      >>> times["once"].ratio, times["twice"].seconds > 0
      (1.0, True)

    """
    if reference not in calls:
        raise ValueError(f"reference {reference!r} is not among the calls {list(calls)}")
    for call in calls.values():
        for _ in range(warmup):
            call()
    per_round: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(number):
                call()
            per_round[name].append((time.perf_counter() - start) / number)
    out = {}
    for name, times in per_round.items():
        ratios = [t / r for t, r in zip(times, per_round[reference], strict=True)]
        median = statistics.median(ratios)
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (median,) * 3
        out[name] = WallTime(
            seconds=statistics.median(times),
            ratio=median,
            spread=(q3 - q1) / median if median else float("nan"),
        )
    return out


# --------------------------------------------------------------------------------------------
# Ratio tables and the regression gate
# --------------------------------------------------------------------------------------------

#: The ratios of :func:`ratio_table`: (numerator, denominator) names in the tables of
#: :func:`cdat_core.lab.benchmark_models.measure`.
RATIOS: tuple[tuple[str, str], ...] = (
    ("value_and_grad", "objective"),
    ("directional_curvature", "objective"),
    ("hvp_dot", "objective"),
    ("gauss_newton_curvature", "objective"),
    ("finite_difference", "objective"),
    ("sgd", "objective"),
    ("adam", "objective"),
    ("sgd+cdat", "sgd"),
    ("adam+cdat", "adam"),
)


def ratio_table(costs: Mapping[str, Costs], field: str = "flops") -> dict[str, float]:
    """The :data:`RATIOS` of one :class:`Costs` field, keyed ``"numerator/denominator"``.

    Args:
      costs: name -> :class:`Costs`, as :func:`cdat_core.lab.benchmark_models.measure` returns
        (pairs with a missing name are left out).
      field: a :class:`Costs` field, e.g. ``"flops"`` or ``"temp_bytes"``.

    Returns:
      ``{"directional_curvature/objective": ..., "sgd+cdat/sgd": ..., ...}``; a ratio with a
      zero denominator is ``nan``.

    Example:
      >>> from cdat_core.lab import costs
      >>> c = {"objective": costs.Costs(10.0, 0, 0, 0, 0, 0),
      ...      "value_and_grad": costs.Costs(30.0, 0, 0, 0, 0, 0)}
      >>> costs.ratio_table(c)
      {'value_and_grad/objective': 3.0}

    """
    out = {}
    for num, den in RATIOS:
        if num in costs and den in costs:
            a, b = float(getattr(costs[num], field)), float(getattr(costs[den], field))
            out[f"{num}/{den}"] = a / b if b else float("nan")
    return out


def fused_step_flops(costs: Mapping[str, Costs], base: str = "sgd") -> float:
    r"""Flops of a CDAT step that shares the gradient's forward pass with the curvature's.

    A CDAT step needs the base step (one value-and-gradient) and :math:`\nabla f^\top u`,
    :math:`u^\top H u` by a second-order forward pass whose primal part is the objective
    already computed for the gradient; when XLA merges the two, the step costs
    ``base + directional_curvature - objective`` flops (plus a few elementwise ops). This is
    the floor the measured ``"<base>+cdat"`` step is compared with.

    Args:
      costs: name -> :class:`Costs` with the curvature methods and the steps, as
        :func:`cdat_core.lab.benchmark_models.measure` returns.
      base: ``"sgd"`` or ``"adam"``.

    Returns:
      The floor in flops.

    Example:
      >>> from cdat_core.lab import costs
      >>> c = {"objective": costs.Costs(10.0, 0, 0, 0, 0, 0),
      ...      "directional_curvature": costs.Costs(50.0, 0, 0, 0, 0, 0),
      ...      "sgd": costs.Costs(31.0, 0, 0, 0, 0, 0)}
      >>> costs.fused_step_flops(c)
      71.0

    """
    return costs[base].flops + costs["directional_curvature"].flops - costs["objective"].flops


class RatioChange(NamedTuple):
    """A ratio that moved beyond the tolerance between a baseline and now.

    Attributes:
      problem: the :class:`Problem` name.
      ratio: the ratio's key, e.g. ``"directional_curvature/objective"``.
      baseline: its value in the baseline.
      current: its value now.
    """

    problem: str
    ratio: str
    baseline: float
    current: float

    @property
    def relative(self) -> float:
        """``current / baseline - 1``."""
        return self.current / self.baseline - 1.0


def compare_ratios(
    current: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    *,
    tolerance: float = 0.05,
) -> tuple[list[RatioChange], list[RatioChange]]:
    """Compare ratio tables ``{problem: {ratio: value}}``; return (regressions, improvements).

    A ratio regresses when it grew by more than ``tolerance`` relative to the baseline
    (``current > baseline * (1 + tolerance)``) and improves when it shrank by more. Only
    entries present in both tables are compared.

    Args:
      current: the table measured now.
      baseline: the committed table.
      tolerance: the relative change allowed either way.

    Returns:
      ``(regressions, improvements)``, lists of :class:`RatioChange`.

    Example:
      >>> from cdat_core.lab import costs
      >>> base = {"mlp2": {"hvp_dot/objective": 4.0, "sgd+cdat/sgd": 2.0}}
      >>> now = {"mlp2": {"hvp_dot/objective": 4.1, "sgd+cdat/sgd": 2.2}}
      >>> worse, better = costs.compare_ratios(now, base, tolerance=0.05)
      >>> [(c.ratio, round(c.relative, 3)) for c in worse], better
      ([('sgd+cdat/sgd', 0.1)], [])

    """
    worse, better = [], []
    for problem, ratios in current.items():
        for key, value in ratios.items():
            old = baseline.get(problem, {}).get(key)
            if old is None:
                continue
            change = RatioChange(problem, key, float(old), float(value))
            if not value <= old * (1 + tolerance):  # NaN counts as a regression
                worse.append(change)
            elif value < old * (1 - tolerance):
                better.append(change)
    return worse, better
