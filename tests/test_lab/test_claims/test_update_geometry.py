"""cdat_core.lab.claims.update_geometry: the Fig. 12, 16, 17 claims hold on paper-like runs."""

from cdat_core.lab import claims
from cdat_core.lab.claims import update_geometry

FAILURES = {
    # σ=2's own trajectory where the on-edge step is the better one at every record.
    "B.greedy_larger_instant_decrease": lambda s: s.replace_run("gd", "cdat σ=2", gap=-0.01),
    # The greedy run's updates turn opposed too.
    "B.cdat_updates_oppose": lambda s: s.replace_run("gd", "cdat σ=1", cosine=-0.8),
    # The linesearch as aligned as the runs at the edge.
    "B.tuner_alignment_with_top_eigenvector": lambda s: s.replace_run(
        "gd", "linesearch c=0", alignment=0.9
    ),
}


def test_paper_like_runs_pass_every_claim(synthetic):
    statuses = synthetic.statuses(synthetic.ideal())
    ids = synthetic.module_claims(update_geometry)
    assert ids == set(FAILURES)
    assert {statuses[i] for i in ids} == {"PASS"}


def test_a_run_against_the_claim_makes_it_fail_and_only_it(synthetic):
    for claim_id, mutate in FAILURES.items():
        synthetic.fails_alone(claim_id, mutate(synthetic))


def test_greedy_winning_in_the_long_run_fails_the_instant_claim(synthetic):
    results = synthetic.ideal()
    synthetic.replace_run("gd", "cdat σ=1", final=0.01)(results)
    assert synthetic.statuses(results)["B.greedy_larger_instant_decrease"] == "FAIL"


def test_runs_without_the_diagnostics_fail_rather_than_pass(synthetic):
    results = synthetic.ideal()
    for run in results["experiments"]["gd"]["runs"].values():
        for key in ("update_cosine", "alignment", "instant_gap"):
            run.pop(key)
    statuses = synthetic.statuses(results)
    assert {statuses[i] for i in synthetic.module_claims(update_geometry)} == {"FAIL"}


def test_both_budgets_run_them():
    assert {claims.CLAIMS[i].budgets for i in synthetic_ids()} == {claims.BOTH}


def synthetic_ids():
    return [
        i for i, spec in claims.CLAIMS.items() if spec.check.__module__ == update_geometry.__name__
    ]
