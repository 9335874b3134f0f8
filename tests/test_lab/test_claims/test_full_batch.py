"""cdat_core.lab.claims.full_batch: findings 1-3 hold on paper-like runs, and each fails alone."""

import pytest

from cdat_core.lab import claims
from cdat_core.lab.claims import full_batch

FAILURES = {
    "F1.linesearch.lr_falls_sharpness_rises": lambda s: s.replace_run(
        "gd", "linesearch c=0", lr=s.ramp(0.01, 0.05)
    ),
    "F1.linesearch.below_edge": lambda s: s.replace_run(
        "gd", "linesearch c=0", lr=lambda t: 0.03, sharpness=lambda t: 80.0
    ),
    "F1.linesearch.loses_to_constant": lambda s: s.replace_run("gd", "linesearch c=0", final=0.01),
    "F1.greedy.lr_falls_sharpness_rises": lambda s: s.replace_run(
        "gd", "cdat σ=1", sharpness=lambda t: 40.0
    ),
    "F1.greedy.below_edge": lambda s: s.replace_run(
        "gd", "cdat σ=1", lr=lambda t: 0.005, sharpness=lambda t: 100.0
    ),
    "F1.greedy.loses_to_constant": lambda s: s.replace_run("gd", "cdat σ=1", final=0.04),
    "F2.tuned_constant_at_edge": lambda s: s.replace_run(
        "gd", "constant η=0.04", sharpness=lambda t: 30.0
    ),
    "F2.sharpens_to_edge": lambda s: s.replace_run(
        "gd", "constant η=0.04", sharpness=s.ramp(50.0, 50.0)
    ),
    "F3.cdat2.warmup": lambda s: s.replace_run("gd", "cdat σ=2", lr=lambda t: 0.1),
    "F3.cdat2.no_sharpening": lambda s: s.replace_run("gd", "cdat σ=2", sharpness=s.ramp(20, 40)),
    "F3.cdat2.on_edge": lambda s: s.replace_run("gd", "cdat σ=2", sharpness=lambda t: 30.0),
    "F3.cdat2.on_par_with_constant": lambda s: s.replace_run("gd", "cdat σ=2", final=0.07),
    "F3.greedy_worse_than_cdat2": lambda s: s.replace_run("gd", "cdat σ=1", final=0.03),
    "F3.sigma_2.0625_best": lambda s: s.replace_run("gd", "cdat σ=2.0625", final=0.045),
    "F3.sigma_2.5_diverges": lambda s: s.replace_run("gd", "cdat σ=2.5", final=0.5),
    "F3.sigma_1.9375_sharpens": lambda s: s.replace_run(
        "gd", "cdat σ=1.9375", sharpness=lambda t: 35.0
    ),
}


def test_paper_like_runs_pass_every_claim(synthetic):
    statuses = synthetic.statuses(synthetic.ideal())
    ids = synthetic.module_claims(full_batch)
    assert len(ids) == 16
    assert {statuses[i] for i in ids} == {"PASS"}


@pytest.mark.parametrize("claim_id", sorted(FAILURES))
def test_a_run_against_the_claim_makes_it_fail_and_only_it(claim_id, synthetic):
    synthetic.fails_alone(claim_id, FAILURES[claim_id](synthetic))


def test_every_claim_has_a_failing_case(synthetic):
    assert synthetic.module_claims(full_batch) == set(FAILURES)


def test_failing_claims_report_their_numbers(synthetic):
    results = synthetic.ideal()
    FAILURES["F3.cdat2.on_edge"](synthetic)(results)
    (claim,) = [c for c in claims.evaluate_claims(results) if c.id == "F3.cdat2.on_edge"]
    assert claim.status == "FAIL"
    assert claim.values["eos"] == pytest.approx(0.1 * 30.0)
    assert "3" in claim.measured
    assert claim.statement and claim.criterion and claim.source.startswith("synthetic")


def test_sources_name_the_runs_read_and_the_reference_shown(synthetic):
    out = {c.id: c.source for c in claims.evaluate_claims(synthetic.ideal())}
    assert out["F1.greedy.below_edge"] == "synthetic: synthetic [greedy, constant]"
    assert out["F3.sigma_2.0625_best"] == "synthetic: synthetic [cdat σ=2.0625, cdat σ=2]"
    assert out["F2.sharpens_to_edge"] == "synthetic: synthetic [constant]"


def test_sharpens_to_edge_is_not_evaluated_without_a_stable_constant(synthetic):
    results = synthetic.ideal()
    for run in results["experiments"]["gd"]["runs"].values():
        if run["tuner"] == "constant":
            run["initial_sharpness"] = 1e3  # every grid η is past the edge at the start
    statuses = synthetic.statuses(results)
    assert statuses["F2.sharpens_to_edge"] == "N/A"
    assert statuses["F2.tuned_constant_at_edge"] == "PASS"
