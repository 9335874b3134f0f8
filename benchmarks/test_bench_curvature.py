"""What curvature costs, as a ratio to the objective, for five models side by side.

Models (``cdat_core.lab.benchmark_models.benchmark_problem``, float32): tanh MLPs of depth
2, 8 and 32 (width 64, batch 128), a two-layer convolutional net (16x16x3 images, batch 32)
and a 2-block causal transformer (width 64, 8 x 32 tokens). Methods (``curvature_methods``):
objective, value_and_grad, directional_curvature (jvp of jvp), hvp_dot (uᵀ·hvp, forward over
reverse), gauss_newton_curvature, finite_difference (central, three objectives).

Each benchmark times one method (compiled beforehand, blocking on the result, warm-up
rounds) and records in ``extra_info`` its ratio to the objective in XLA-counted flops
(``compiled.cost_analysis()``), XLA temp bytes (``compiled.memory_analysis()``) and wall time,
the last from interleaved rounds of the objective and the method in the same test, so both
see the same machine load. Wall time is never asserted; the XLA counts are deterministic and
a few structural facts about them are. ``test_memory_growth_with_depth`` records how the
temp bytes of directional_curvature, hvp and value_and_grad grow with depth (on a GPU, also
the peak of ``device.memory_stats()``, one fresh process per measurement).
"""

import functools
import json
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from cdat_core.lab import benchmark_models as bm
from cdat_core.lab import costs

METHODS = [
    "objective",
    "value_and_grad",
    "directional_curvature",
    "hvp_dot",
    "gauss_newton_curvature",
    "finite_difference",
]
DEPTHS = {"mlp2": 2, "mlp8": 8, "mlp32": 32}
WALL_ROUNDS = 21  # interleaved rounds for the wall-time ratio
BENCH_ROUNDS = 20  # pytest-benchmark rounds (the statistics a comparison uses)
TARGET_SECONDS = 0.01  # each timed batch of calls lasts at least this long


@functools.cache
def problem(name):
    return bm.benchmark_problem(name)


@functools.cache
def compiled(name, method):
    """The method compiled with default options (the code that is timed)."""
    p = problem(name)
    return jax.jit(bm.curvature_methods(p)[method]).lower(*p.args).compile()


def caller(name, method):
    fn, args = compiled(name, method), problem(name).args
    return lambda: jax.block_until_ready(fn(*args))


def calls_per_batch(call):
    """Enough calls that a timed batch lasts about TARGET_SECONDS (at least one)."""
    call()
    start = time.perf_counter()
    call()
    once = time.perf_counter() - start
    return max(1, int(TARGET_SECONDS / max(once, 1e-7)))


def environment():
    device = jax.devices()[0]
    return {"device": getattr(device, "device_kind", str(device)), "jax": jax.__version__}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", bm.PROBLEM_NAMES)
def test_cost_ratio_to_objective(benchmark, bench_report, name, method):
    benchmark.group = f"curvature {name}"
    reference, candidate = caller(name, "objective"), caller(name, method)
    counts = costs.xla_costs(compiled(name, method))
    ratios = costs.cost_ratios(counts, costs.xla_costs(compiled(name, "objective")))
    number = calls_per_batch(candidate)
    wall = costs.wall_time_ratios(
        {"objective": reference, method: candidate},
        reference="objective",
        rounds=WALL_ROUNDS,
        number=number,
    )[method]
    out = benchmark.pedantic(candidate, rounds=BENCH_ROUNDS, iterations=number, warmup_rounds=2)

    benchmark.extra_info.update(
        model=name,
        method=method,
        flops=counts.flops,
        temp_bytes=counts.temp_bytes,
        flop_ratio=ratios["flops"],
        flop_and_transcendental_ratio=ratios["flops_and_transcendentals"],
        temp_bytes_ratio=ratios["temp_bytes"],
        total_bytes_ratio=ratios["total_bytes"],
        wall_ratio=wall.ratio,
        wall_ratio_spread=wall.spread,
        **environment(),
    )
    if method != "objective":
        bench_report.append(
            f"{name:12s} {method:24s} / objective: flops x{ratios['flops']:.2f}, "
            f"temp bytes x{ratios['temp_bytes']:.2f} (with args and outputs "
            f"x{ratios['total_bytes']:.2f}), wall x{wall.ratio:.2f} "
            f"(spread {wall.spread:.0%})"
        )
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
    if method != "objective":
        assert ratios["flops"] > 1.0


def gpu_peak_bytes(name, method):
    """Peak device bytes of one call above what the arguments hold, in a fresh process."""
    code = textwrap.dedent(
        f"""
        import jax
        from cdat_core.lab import benchmark_models as bm
        p = bm.benchmark_problem({name!r})
        fn = jax.jit(bm.curvature_methods(p)[{method!r}]).lower(*p.args).compile()
        dev = jax.devices()[0]
        before = dev.memory_stats()["bytes_in_use"]
        jax.block_until_ready(fn(*p.args))
        print(dev.memory_stats()["peak_bytes_in_use"] - before)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(run.stdout.strip().splitlines()[-1])


def test_memory_growth_with_depth(bench_report):
    methods = ["objective", "value_and_grad", "directional_curvature", "hvp_dot"]
    temp = {
        (name, m): costs.xla_costs(compiled(name, m)).temp_bytes for name in DEPTHS for m in methods
    }
    per_layer = {
        m: (temp["mlp32", m] - temp["mlp8", m]) / (DEPTHS["mlp32"] - DEPTHS["mlp8"])
        for m in methods
    }
    for name in DEPTHS:
        bench_report.append(
            f"XLA temp KiB, depth {DEPTHS[name]:2d}: "
            + ", ".join(f"{m} {temp[name, m] / 1024:.0f}" for m in methods)
        )
    bench_report.append(
        "XLA temp KiB per layer (depth 8 -> 32): "
        + ", ".join(f"{m} {per_layer[m] / 1024:.1f}" for m in methods)
    )
    if jax.default_backend() == "gpu":
        peaks = {(n, m): gpu_peak_bytes(n, m) for n in DEPTHS for m in methods}
        bench_report.append(
            "GPU peak KiB above the arguments: "
            + json.dumps({f"{n}/{m}": round(v / 1024) for (n, m), v in peaks.items()})
        )
    # The objective keeps O(1) activations; a reverse pass keeps one per layer; forward over
    # reverse also their tangents. Forward over forward keeps none in principle; XLA's CPU
    # scheduler (concurrency-optimised by default) still lets it grow, but more slowly.
    assert per_layer["objective"] < 0.1 * per_layer["value_and_grad"]
    assert per_layer["directional_curvature"] < per_layer["value_and_grad"]
    assert per_layer["directional_curvature"] < 0.5 * per_layer["hvp_dot"]
