"""cdat_core.lab.claims.other_tuners: the appendix B claims hold on paper-like runs, and fail."""

import pytest

from cdat_core.lab import claims
from cdat_core.lab.claims import other_tuners

FAILURES = {
    "B.polyak_larger_steps": lambda s: s.replace_run("gd", "polyak η_max=1", lr=lambda t: 0.01),
    "B.hypergradient_on_par_and_sharpens": lambda s: s.replace_run(
        "gd", "hypergradient β=0.01", sharpness=lambda t: 40.0
    ),
    "B.exact_sharpness_rule": lambda s: s.replace_run("gd", "sharpness σ=3", final=0.9),
    "B.warmup_schedule_vs_cdat": lambda s: s.replace_run("gd", "warmup_cosine peak=0.1", final=0.2),
}


def test_paper_like_runs_pass_every_claim(synthetic):
    statuses = synthetic.statuses(synthetic.ideal())
    ids = synthetic.module_claims(other_tuners)
    assert len(ids) == 4
    assert {statuses[i] for i in ids} == {"PASS"}


@pytest.mark.parametrize("claim_id", sorted(FAILURES))
def test_a_run_against_the_claim_makes_it_fail_and_only_it(claim_id, synthetic):
    synthetic.fails_alone(claim_id, FAILURES[claim_id](synthetic))


def test_every_claim_has_a_failing_case(synthetic):
    assert synthetic.module_claims(other_tuners) == set(FAILURES)


def test_only_the_full_budget_runs_them():
    mine = [i for i, c in claims.CLAIMS.items() if c.check.__module__ == other_tuners.__name__]
    assert {claims.CLAIMS[i].budgets for i in mine} == {claims.FULL_ONLY}
