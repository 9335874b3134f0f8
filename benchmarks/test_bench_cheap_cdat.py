"""Cheap CDAT (issue 15): cost and accuracy of each curvature estimator, x every in {1, 4, 16}.

Models: ``mlp2``, ``mlp8``, ``conv``, ``transformer`` of ``cdat_core.lab.benchmark_models``
(float32). Bases: ``sgd`` and ``adam``. A step is ``jax.value_and_grad`` of the loss, the
optimizer's update and ``optax.apply_updates``; a CDAT step passes ``value=`` and ``grad=``
to ``update`` (so the cheap estimators reuse them) and is
``cdat(base(1.0), sigma=2, curvature=estimator, every=k)``; the plain step is
``base(1e-2)``.

Cost (``test_step_cost``), against the plain step of the same base:

- flops, counted by XLA (``cdat_core.lab.costs.xla_costs``, nothing run) on two programs
  traced with the refresh test fixed (``_cdat_estimate._refresh_due`` patched to a Python
  bool, so only one branch exists): ``refresh`` (the estimator's own pass) and ``reuse`` (the
  last Rayleigh quotient); the lagged parabola's refresh is counted in its steady state (the
  previous step available, ``_lag_available`` patched to True), and the forward-edge search's
  ``while_loop``, whose body XLA counts once, adds ``(probes - 1)`` objectives, ``probes``
  being its mean forward passes over updates 1-7 of a real run. Amortized over ``every=k``:
  ``(refresh + (k - 1) reuse) / k``;
- temp bytes of the real ``every=k`` step (both branches compiled: what XLA reserves);
- wall time of 16 updates from the same start in one ``lax.scan`` (the refreshes and the
  search as they happen), interleaved with the plain scan (``costs.wall_time_ratios``);
  pytest-benchmark times the CDAT scan.

Accuracy (``test_accuracy``, sgd direction, every=1): one float32 update from the model's
params with the estimator itself (on its fallback probe), then the curvature it hands the rule
at the second update, computed from that same point and state in float32 and again in float64
(everything cast), against the exact u^T H u there in float64: the float32 and float64 errors,
and the float32 rounding alone (|d32 - d64| / d64).

Set ``CHEAP_CDAT_RESULTS=path.json`` to have every figure written there at the end of the run
(the ranking table in the notes is built from it). Nothing here asserts on time; the tests
assert finite outputs and that the reuse program costs less than the refresh one.
"""

import functools
import json
import os
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core.lab import benchmark_models as bm
from cdat_core.lab import costs
from cdat_core.transforms import _cdat_estimate

MODELS = ("mlp2", "mlp8", "conv", "transformer")
BASES = {"sgd": optax.sgd, "adam": optax.adam}
ESTIMATORS = ("exact", "parabolic", "lagged", "gauss_newton", "forward_edge")
EVERY = (1, 4, 16)
SCAN_STEPS = 16
WALL_ROUNDS = 7
BENCH_ROUNDS = 5
RESULTS: dict[str, dict] = {"cost": {}, "accuracy": {}}


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    path = os.environ.get("CHEAP_CDAT_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(RESULTS, f, indent=1, sort_keys=True)


@functools.cache
def problem(name, dtype="float32"):
    p = bm.benchmark_problem(name)
    if dtype == "float32":
        return p
    cast = functools.partial(jax.tree.map, lambda a: jnp.asarray(a, jnp.float64))
    inputs = p.inputs if p.inputs.dtype.kind == "i" else cast(p.inputs)
    return p._replace(params=cast(p.params), direction=cast(p.direction), inputs=inputs)


def curvature_of(p, estimator):
    if estimator != "gauss_newton":
        return estimator
    return cc.GaussNewtonCurvature(
        lambda w, inputs: p.predict(w, inputs), lambda out, targets: p.output_loss(out, targets)
    )


def optimizer(p, base, estimator, every):
    if estimator is None:
        return BASES[base](1e-2)
    return cc.cdat(BASES[base](1.0), sigma=2.0, curvature=curvature_of(p, estimator), every=every)


def make_step(p, opt, tuned):
    def value_fn(w, inputs, targets):
        return p.loss(w, inputs, targets)

    def step(params, state, inputs, targets):
        value, grad = jax.value_and_grad(p.loss)(params, inputs, targets)
        if tuned:
            updates, state = opt.update(
                grad,
                state,
                params,
                value_fn=value_fn,
                inputs=inputs,
                targets=targets,
                value=value,
                grad=grad,
            )
        else:
            updates, state = opt.update(grad, state, params)
        return optax.apply_updates(params, updates), state, value

    return step


def step_args(p, opt):
    return (p.params, opt.init(p.params), p.inputs, p.targets)


@functools.cache
def plain_costs(name, base):
    p = problem(name)
    opt = optimizer(p, base, None, 1)
    objective = costs.xla_costs(lambda w, x, y: p.loss(w, x, y), p.params, p.inputs, p.targets)
    return costs.xla_costs(make_step(p, opt, False), *step_args(p, opt)), objective


@functools.cache
def mean_probes(name, base, estimator):
    """Mean forward passes of the estimator over updates 1-7 of a real every=1 run."""
    p = problem(name)
    opt = optimizer(p, base, estimator, 1)
    step = jax.jit(make_step(p, opt, True))
    w, state, x, y = step_args(p, opt)
    probes = []
    for _ in range(8):
        w, state, _ = step(w, state, x, y)
        probes.append(int(state[1].num_probes))
    return float(np.mean(probes[1:]))


@functools.cache
def branch_flops(name, base, estimator):
    """XLA flops of the refresh and the reuse programs (the refresh test fixed in Python)."""
    p = problem(name)
    out = {}
    for branch, due in (("refresh", True), ("reuse", False)):
        opt = optimizer(p, base, estimator, 2)  # every > 1: the refresh test is consulted
        with (
            mock.patch.object(_cdat_estimate, "_refresh_due", lambda state, every, d=due: d),
            mock.patch.object(_cdat_estimate, "_lag_available", lambda state: True),
        ):
            out[branch] = costs.xla_costs(make_step(p, opt, True), *step_args(p, opt)).flops
    probes = mean_probes(name, base, estimator) if estimator == "forward_edge" else 1.0
    _, objective = plain_costs(name, base)
    out["refresh"] += max(probes - 1.0, 0.0) * objective.flops
    out["probes"] = probes
    return out


@functools.cache
def scan_call(name, base, estimator, every):
    p = problem(name)
    opt = optimizer(p, base, estimator, every)
    step = make_step(p, opt, estimator is not None)

    def run(params, state, inputs, targets):
        def body(carry, _):
            w, s, _ = step(*carry, inputs, targets)
            return (w, s), None

        return jax.lax.scan(body, (params, state), None, length=SCAN_STEPS)[0]

    args = step_args(p, opt)
    compiled = jax.jit(run).lower(*args).compile()
    temp = costs.xla_costs(jax.jit(step), *args).temp_bytes
    return (lambda: jax.block_until_ready(compiled(*args))), temp


@pytest.mark.parametrize("every", EVERY)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("name", MODELS)
def test_step_cost(benchmark, bench_report, name, base, estimator, every):
    benchmark.group = f"cheap cdat {name} {base}"
    plain, _ = plain_costs(name, base)
    flops = branch_flops(name, base, estimator)
    amortized = (flops["refresh"] + (every - 1) * flops["reuse"]) / every / plain.flops
    candidate, temp = scan_call(name, base, estimator, every)
    reference, plain_temp = scan_call(name, base, None, 1)
    wall = costs.wall_time_ratios(
        {"plain": reference, "cdat": candidate}, reference="plain", rounds=WALL_ROUNDS, number=1
    )
    out = benchmark.pedantic(candidate, rounds=BENCH_ROUNDS, iterations=1, warmup_rounds=1)
    figures = {
        "flop_ratio_refresh": flops["refresh"] / plain.flops,
        "flop_ratio_reuse": flops["reuse"] / plain.flops,
        "flop_ratio_amortized": amortized,
        "probes": flops["probes"],
        "temp_bytes_ratio": temp / plain_temp if plain_temp else float("nan"),
        "wall_ratio": wall["cdat"].ratio,
        "wall_ratio_spread": wall["cdat"].spread,
    }
    benchmark.extra_info.update(model=name, base=base, estimator=estimator, every=every, **figures)
    RESULTS["cost"][f"{name}/{base}/{estimator}/{every}"] = figures
    probes = f", probes {flops['probes']:.1f}" if estimator == "forward_edge" else ""
    bench_report.append(
        f"{name:11s} {base:4s} {estimator:12s} every={every:2d}: flops x{amortized:.3f} "
        f"(refresh x{figures['flop_ratio_refresh']:.3f}, reuse x{figures['flop_ratio_reuse']:.3f}"
        f"{probes}), temp "
        f"x{figures['temp_bytes_ratio']:.2f}, wall x{wall['cdat'].ratio:.2f} over "
        f"{SCAN_STEPS} updates (spread {wall['cdat'].spread:.0%})"
    )
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(out[0]))
    assert flops["reuse"] < flops["refresh"] or estimator == "lagged"


def _at_second_update(name, estimator):
    """(params, state, inputs, targets) before the second float32 update of the estimator's run."""
    p = problem(name)
    opt = optimizer(p, "sgd", estimator, 1)
    step = jax.jit(make_step(p, opt, True))
    w, state, x, y = step_args(p, opt)
    w1, state, _ = step(w, state, x, y)
    return opt, step, (w1, state, x, y)


def _to64(tree):
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree.map(cast, tree)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("name", MODELS)
def test_accuracy(bench_report, name, estimator):
    _, step32, args = _at_second_update(name, estimator)
    d32 = float(step32(*args)[1][1].curvature)
    with jax.enable_x64(True):
        p64 = problem(name, "float64")
        opt64 = optimizer(p64, "sgd", estimator, 1)
        w1, state, x, y = _to64(args)
        d64 = float(jax.jit(make_step(p64, opt64, True))(w1, state, x, y)[1][1].curvature)
        u1 = jax.tree.map(jnp.negative, jax.grad(p64.loss)(w1, x, y))
        exact = float(cc.directional_curvature(lambda v: p64.loss(v, x, y), w1, u1).curvature)
    figures = {
        "error_float32": abs(d32 - exact) / abs(exact),
        "error_float64": abs(d64 - exact) / abs(exact),
        "rounding": abs(d32 - d64) / abs(d64),
        "estimate_float64": d64,
        "exact_float64": exact,
    }
    RESULTS["accuracy"][f"{name}/{estimator}"] = figures
    bench_report.append(
        f"{name:11s} {estimator:12s}: |d - u'Hu| / u'Hu = {figures['error_float32']:.2e} "
        f"(float32), {figures['error_float64']:.2e} (float64); float32 rounding "
        f"{figures['rounding']:.1e}; d {d64:.4g}, u'Hu {exact:.4g} (float64)"
    )
    assert all(np.isfinite(v) for v in figures.values())
