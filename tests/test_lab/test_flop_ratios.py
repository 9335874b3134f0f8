"""The XLA-counted cost ratios of the smallest benchmark model, against hand bounds and the
committed baseline (benchmarks/flop_ratios_baseline.json; the full gate over every model is
`python benchmarks/check_flop_ratios.py`)."""

import json
from pathlib import Path

import jax
import pytest

from cdat_core.lab import benchmark_models as bm
from cdat_core.lab import costs

BASELINE = Path(__file__).resolve().parents[2] / "benchmarks" / "flop_ratios_baseline.json"
PROBLEM = "mlp2"


@pytest.fixture(scope="module")
def measured():
    # optax's Adam raises a float to an int32 count, which strict promotion refuses; every
    # array of the problem is float32 explicitly, so the counts match the default config.
    with jax.numpy_dtype_promotion("standard"):
        return bm.measure(bm.benchmark_problem(PROBLEM))


@pytest.fixture(scope="module")
def baseline():
    return json.loads(BASELINE.read_text())


def test_flop_ratios_within_tolerance_of_the_committed_baseline(measured, baseline):
    current = {PROBLEM: costs.ratio_table(measured)}
    assert set(current[PROBLEM]) == set(baseline["flops"][PROBLEM])
    worse, better = costs.compare_ratios(
        current, baseline["flops"], tolerance=baseline["tolerance"]
    )
    assert worse == [], f"flop ratios regressed beyond {baseline['tolerance']:.0%}: {worse}"
    assert better == [], f"flop ratios improved: re-baseline with --update: {better}"


def test_directional_curvature_costs_a_few_objectives(measured):
    ratio = measured["directional_curvature"].flops / measured["objective"].flops
    # A second-order forward pass of a matmul layer is at most 5 products where the objective
    # makes 1 (Wx; U x + W ẋ; U ẋ twice merged + W ẍ); the first layer has ẋ = ẍ = 0.
    assert ratio > 1.0 and ratio <= 5.0


def test_finite_difference_costs_three_objectives(measured):
    # f(w + hu), f(w), f(w - hu) plus two axpys over the params: an independent check of
    # the counting itself.
    ratio = measured["finite_difference"].flops / measured["objective"].flops
    assert 3.0 <= ratio <= 3.1


def test_forward_mode_costs_less_than_forward_over_reverse(measured):
    assert measured["directional_curvature"].flops < measured["hvp_dot"].flops


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_cdat_step_is_fused(measured, base):
    # The step traces value, gradient, slope and curvature once: XLA shares the forward
    # pass, so it costs no more than the base step plus the curvature's extra passes.
    floor = costs.fused_step_flops(measured, base)
    tuned = measured[f"{base}+cdat"].flops
    assert measured[base].flops < tuned <= 1.01 * floor
