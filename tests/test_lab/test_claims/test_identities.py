"""cdat_core.lab.claims.identities: eqs (3) and (7) on the quadratic's measurements."""

import pytest

from cdat_core.lab.claims import identities

FAILURES = {
    "I1.aligned": lambda s: s.set_path(("identity", "on_edge_aligned"), 0.21),
    "I2.on_edge_model": lambda s: s.set_path(
        ("identity", "on_edge_random"),
        [0.1, 1.0],  # 0.1 < 2/λ_max
    ),
}


def test_exact_identities_pass(synthetic):
    statuses = synthetic.statuses(synthetic.ideal())
    ids = synthetic.module_claims(identities)
    assert ids == set(FAILURES)
    assert {statuses[i] for i in ids} == {"PASS"}


@pytest.mark.parametrize("claim_id", sorted(FAILURES))
def test_a_measurement_against_the_claim_makes_it_fail_and_only_it(claim_id, synthetic):
    synthetic.fails_alone(claim_id, FAILURES[claim_id](synthetic))


def test_a_model_gap_above_the_tolerance_fails(synthetic):
    results = synthetic.ideal()
    results["identity"]["model_gap_random"] = [1e-7, 2e-4]
    assert synthetic.statuses(results)["I2.on_edge_model"] == "FAIL"
