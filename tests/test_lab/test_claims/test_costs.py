"""cdat_core.lab.claims.costs: the cost ratios of appendix C.3."""

import pytest

from cdat_core.lab import claims
from cdat_core.lab.claims import costs

RATIOS = ("costs", "ratios")
FAILURES = {
    "C1.curvature_flops": lambda s: s.set_path(
        (*RATIOS, "directional_curvature/objective flops"), 9.0
    ),
    "C2.curvature_memory": lambda s: s.set_path(
        (*RATIOS, "directional_curvature/objective bytes"), 11.0
    ),
    "C3.curvature_wall_time": lambda s: s.set_path(
        (*RATIOS, "directional_curvature/objective wall"), 1.2
    ),
    "C4.cdat_step_wall_time": lambda s: s.set_path((*RATIOS, "sgd+cdat/sgd wall"), None),  # NaN
    "C5.cdat_step_flops": lambda s: s.set_path((*RATIOS, "sgd+cdat/sgd flops"), 3.5),
    "C6.forward_mode_memory": lambda s: s.set_path(
        (*RATIOS, "directional_curvature/hvp_dot temp_bytes"), 1.2
    ),
}


def test_paper_like_ratios_pass(synthetic):
    statuses = synthetic.statuses(synthetic.ideal())
    ids = synthetic.module_claims(costs)
    assert ids == set(FAILURES)
    assert {statuses[i] for i in ids} == {"PASS"}


@pytest.mark.parametrize("claim_id", sorted(FAILURES))
def test_a_ratio_against_the_claim_makes_it_fail_and_only_it(claim_id, synthetic):
    synthetic.fails_alone(claim_id, FAILURES[claim_id](synthetic))


def test_about_k_times_is_the_interval_k_over_1_5_to_1_5_k(synthetic):
    for ratio, status in ((2.0, "PASS"), (1.99, "FAIL"), (4.5, "PASS"), (4.51, "FAIL")):
        results = synthetic.ideal()
        results["costs"]["ratios"]["directional_curvature/objective flops"] = ratio
        assert synthetic.statuses(results)["C1.curvature_flops"] == status, ratio


def test_a_missing_ratio_is_not_evaluated_and_the_source_is_the_measurement():
    out = claims.evaluate_claims(
        {"budget": "b", "costs": {"description": "tiny", "ratios": {"sgd+cdat/sgd wall": 2.0}}}
    )
    by_id = {c.id: c for c in out}
    assert by_id["C4.cdat_step_wall_time"].status == "PASS"
    assert by_id["C1.curvature_flops"].status == "N/A"
    assert by_id["C4.cdat_step_wall_time"].source == "b: tiny"
