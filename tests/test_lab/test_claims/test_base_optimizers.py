"""cdat_core.lab.claims.base_optimizers: finding 3 with momentum, Adam and a CNN."""

import pytest

from cdat_core.lab.claims import base_optimizers

FAILURES = {
    "F3.momentum.on_par_with_constant": lambda s: s.replace_run("momentum", "cdat σ=2", final=0.2),
    "F3.adam.greedy_worse": lambda s: s.replace_run("adam", "cdat σ=1", final=0.05),
    "F3.cnn_gd.on_par_with_constant": lambda s: s.replace_run(
        "cnn_gd", "cdat σ=2", final=float("nan")
    ),
}


def test_paper_like_runs_pass_every_claim(synthetic):
    statuses = synthetic.statuses(synthetic.ideal())
    ids = synthetic.module_claims(base_optimizers)
    assert len(ids) == 6
    assert {statuses[i] for i in ids} == {"PASS"}


@pytest.mark.parametrize("claim_id", sorted(FAILURES))
def test_a_run_against_the_claim_makes_it_fail_and_only_it(claim_id, synthetic):
    synthetic.fails_alone(claim_id, FAILURES[claim_id](synthetic))


def test_every_claim_has_a_failing_case_but_the_twins_of_those_above(synthetic):
    assert synthetic.module_claims(base_optimizers) - set(FAILURES) == {
        "F3.momentum.greedy_worse",
        "F3.adam.on_par_with_constant",
        "F3.cnn_gd.greedy_worse",
    }


def test_a_missing_experiment_leaves_its_claims_not_evaluated(synthetic):
    results = synthetic.ideal()
    del results["experiments"]["adam"]
    statuses = synthetic.statuses(results)
    assert statuses["F3.adam.on_par_with_constant"] == "N/A"
    assert statuses["F3.adam.greedy_worse"] == "N/A"
    assert statuses["F3.momentum.on_par_with_constant"] == "PASS"
