"""cdat_core.lab.costs: XLA counts against hand counts, ratio tables, wall-time bookkeeping."""

import math

import jax
import jax.numpy as jnp
import pytest

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
