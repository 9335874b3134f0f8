"""cdat_core.lab.claims.simplified_models: the trajectories of eqs (4)-(10)."""

import pytest

from cdat_core.lab.claims import simplified_models

FAILURES = {
    "D1.constant_oscillates_at_edge": lambda s: s.set_path(
        ("models", "constant", "sharpness"), lambda x: [2.5] * len(x)
    ),
    "D2.classical_runaway_sharpening": lambda s: s.set_path(
        ("models", "classical", "sharpness"), lambda x: x[::-1]
    ),
    "D3.cdat2_holds_edge": lambda s: s.set_path(
        ("models", "cdat_2", "y"), lambda y: [0.05] * len(y)
    ),
    "D4.cdat1.9_sharpens": lambda s: s.set_path(
        ("models", "cdat_1.9", "sharpness"), lambda x: [19.0] * len(x)
    ),
}


def test_paper_like_trajectories_pass(synthetic):
    statuses = synthetic.statuses(synthetic.ideal())
    ids = synthetic.module_claims(simplified_models)
    assert ids == set(FAILURES)
    assert {statuses[i] for i in ids} == {"PASS"}


@pytest.mark.parametrize("claim_id", sorted(FAILURES))
def test_a_trajectory_against_the_claim_makes_it_fail_and_only_it(claim_id, synthetic):
    synthetic.fails_alone(claim_id, FAILURES[claim_id](synthetic))


def test_a_missing_trajectory_is_not_evaluated(synthetic):
    results = synthetic.ideal()
    del results["models"]["cdat_2"]
    statuses = synthetic.statuses(results)
    assert statuses["D3.cdat2_holds_edge"] == statuses["D4.cdat1.9_sharpens"] == "N/A"
    assert statuses["D1.constant_oscillates_at_edge"] == "PASS"
