"""cdat_core.lab.costs and benchmark_models: XLA counts against hand counts, ratio tables,
wall-time bookkeeping, the models and steps the benchmarks measure."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import _tree, testing
from cdat_core.lab import benchmark_models as bm
from cdat_core.lab import costs

F32 = jnp.float32


def _run(fn, *args):
    """Compile at LLVM -O0 (fast to build; these tests check values, not speed) and run."""
    return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


@pytest.mark.parametrize(("m", "k", "n"), [(3, 4, 5), (16, 32, 8), (2, 64, 3)])
def test_matmul_flops_are_two_m_n_k(m, k, n):
    a, b = jnp.ones((m, k), F32), jnp.ones((k, n), F32)
    c = costs.xla_costs(lambda a, b: a @ b, a, b)
    assert c.flops == 2 * m * n * k
    assert c.argument_bytes == 4 * (m * k + k * n)
    assert c.output_bytes == 4 * m * n


def test_elementwise_and_transcendental_counts():
    x = jnp.ones((10, 7), F32)
    add = costs.xla_costs(lambda x: x + x, x)
    assert add.flops == 70 and add.transcendentals == 0
    tanh = costs.xla_costs(jnp.tanh, x)
    assert tanh.transcendentals == 70


def test_a_chain_of_matmuls_adds_up():
    x, w = jnp.ones((8, 16), F32), jnp.ones((16, 16), F32)
    one = costs.xla_costs(lambda x, w: x @ w, x, w).flops
    three = costs.xla_costs(lambda x, w: ((x @ w) @ w) @ w, x, w).flops
    assert three == 3 * one


def test_accepts_an_already_compiled_function():
    x = jnp.ones((4, 4), F32)
    compiled = jax.jit(lambda x: x @ x).lower(x).compile()
    assert costs.xla_costs(compiled).flops == 2 * 4**3


def test_cost_ratios_and_zero_reference():
    ref = costs.Costs(10.0, 0.0, 0.0, 0, 0, 0)
    r = costs.cost_ratios(costs.Costs(30.0, 5.0, 0.0, 8, 0, 0), ref)
    assert r["flops"] == 3.0
    assert math.isnan(r["transcendentals"]) and math.isnan(r["temp_bytes"])
    assert r["flops_and_transcendentals"] == 3.5


def test_wall_time_ratios_reference_is_one_and_unknown_reference_raises():
    calls = {"a": lambda: None, "b": lambda: sum(range(1000))}
    out = costs.wall_time_ratios(calls, "a", rounds=3, number=2, warmup=1)
    assert out["a"].ratio == 1.0 and out["a"].spread == 0.0
    assert out["b"].seconds > 0
    with pytest.raises(ValueError, match="reference"):
        costs.wall_time_ratios(calls, "c")


@pytest.mark.parametrize("name", ["mlp2", "conv"])
def test_problem_is_float32_and_loss_composes(name):
    p = bm.benchmark_problem(name)
    value, composed = _run(
        lambda w, x, y: (p.loss(w, x, y), p.output_loss(p.predict(w, x), y)),
        p.params,
        p.inputs,
        p.targets,
    )
    assert value.dtype == F32 and bool(jnp.isfinite(value))
    assert all(x.dtype == F32 for x in jax.tree.leaves((p.params, p.direction)))
    assert jax.tree.structure(p.params) == jax.tree.structure(p.direction)
    np.testing.assert_allclose(value, composed, rtol=1e-6)


def test_unknown_problem_raises():
    with pytest.raises(ValueError, match="unknown problem"):
        bm.benchmark_problem("resnet")


def test_curvature_methods_agree_with_each_other():
    p = bm.benchmark_problem("mlp2")
    m = bm.curvature_methods(p)
    names = ("value_and_grad", "directional_curvature", "hvp_dot", "finite_difference")
    (value, grad), dc, hvp_dot, fd = _run(lambda *a: [m[k](*a) for k in names], *p.args)
    np.testing.assert_allclose(dc.value, value, rtol=1e-6)
    np.testing.assert_allclose(dc.slope, _tree.vdot(grad, p.direction), rtol=1e-4)
    np.testing.assert_allclose(dc.curvature, hvp_dot, rtol=1e-3)
    np.testing.assert_allclose(fd[1], dc.slope, rtol=1e-2)  # float32 central difference


def test_tuner_steps_run_and_cdat_takes_the_on_edge_step():
    p = bm.benchmark_problem("mlp2")
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam: float ** int32 count
        steps = bm.tuner_steps(p, sigma=2.0)
    assert set(steps) == {"sgd", "sgd+cdat", "adam", "adam+cdat"}
    step, args = steps["sgd+cdat"]

    def both(*args):
        grad = jax.grad(p.loss)(p.params, p.inputs, p.targets)
        u = jax.tree.map(jnp.negative, grad)
        curv = cc.directional_curvature(p.loss, p.params, u, p.inputs, p.targets)
        return step(*args), grad, curv

    (params, state, value), grad, curv = _run(both, *args)
    assert bool(jnp.isfinite(value))
    # u = -g: η = 2(-gᵀu) / uᵀHu, and the new params are w + ηu.
    eta = 2 * -curv.slope / curv.curvature
    np.testing.assert_allclose(state[1].learning_rate, eta, rtol=1e-4)
    expected = jax.tree.map(lambda w, g: w - eta * g, p.params, grad)
    testing.assert_tree_allclose(params, expected, rtol=1e-4, atol=1e-6)


def test_ratio_table_and_compare_ratios():
    c = {
        "objective": costs.Costs(10.0, 0, 0, 4, 0, 0),
        "directional_curvature": costs.Costs(40.0, 0, 0, 8, 0, 0),
        "sgd": costs.Costs(30.0, 0, 0, 4, 0, 0),
        "sgd+cdat": costs.Costs(60.0, 0, 0, 4, 0, 0),
    }
    table = costs.ratio_table(c)
    assert table == {
        "directional_curvature/objective": 4.0,
        "sgd/objective": 3.0,
        "sgd+cdat/sgd": 2.0,
    }
    assert costs.ratio_table(c, "temp_bytes")["directional_curvature/objective"] == 2.0
    assert costs.fused_step_flops(c) == 60.0
    base = {"m": table}
    same, better = costs.compare_ratios({"m": table}, base)
    assert same == [] and better == []
    worse, _ = costs.compare_ratios({"m": {"sgd+cdat/sgd": 2.11}}, base, tolerance=0.05)
    assert [w.ratio for w in worse] == ["sgd+cdat/sgd"]
    within, _ = costs.compare_ratios({"m": {"sgd+cdat/sgd": 2.09}}, base, tolerance=0.05)
    assert within == []
    _, better = costs.compare_ratios({"m": {"sgd+cdat/sgd": 1.8}}, base, tolerance=0.05)
    assert [b.ratio for b in better] == ["sgd+cdat/sgd"]
    nan, _ = costs.compare_ratios({"m": {"sgd+cdat/sgd": float("nan")}}, base)
    assert len(nan) == 1
    missing, _ = costs.compare_ratios({"other": {"sgd+cdat/sgd": 9.0}}, base)
    assert missing == []
