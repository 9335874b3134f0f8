"""cdat_core.lab.claims.cheap_cdat: C7 (cost) and C8 (quality) hold on paper-like runs, and fail."""

from cdat_core.lab import claims
from cdat_core.lab.claims import cheap_cdat

IDS = {"C7.cheap_cdat_cost", "C8.cheap_cdat_quality"}


def _worse(synthetic, experiment, tuner, factor):
    def mutate(results):
        exact = results["experiments"][experiment]["runs"]["cdat σ=2"]["final_loss"]
        synthetic.replace_run(experiment, f"{tuner} σ=2", final=exact * factor)(results)

    return mutate


def _statuses(synthetic, *mutations, costs=None):
    results = synthetic.ideal()
    for mutate in mutations:
        mutate(results)
    if costs is not None:
        results["cheap_costs"] = costs
    return synthetic.statuses(results)


def test_paper_like_runs_pass_both(synthetic):
    assert synthetic.module_claims(cheap_cdat) == IDS
    statuses = synthetic.statuses(synthetic.ideal())
    assert {statuses[i] for i in IDS} == {"PASS"}


def test_no_estimator_within_5_percent_fails_both(synthetic):
    statuses = _statuses(
        synthetic,
        _worse(synthetic, "cnn_adam", "cdat_lagged", 1.2),  # 20 % worse on one experiment
        _worse(synthetic, "adam", "cdat_every16", 1.06),  # just past the 5 %
    )
    assert statuses["C8.cheap_cdat_quality"] == "FAIL"
    assert statuses["C7.cheap_cdat_cost"] == "FAIL"
    others = {k for k, v in statuses.items() if v != "PASS"} - IDS
    assert not others


def test_a_diverged_estimator_does_not_keep_the_quality(synthetic):
    statuses = _statuses(
        synthetic,
        _worse(synthetic, "gd", "cdat_lagged", float("inf")),
        _worse(synthetic, "gd", "cdat_every16", float("nan")),
    )
    assert statuses["C8.cheap_cdat_quality"] == "FAIL"


def test_cost_judges_the_cheapest_estimator_that_keeps_the_quality(synthetic):
    # The lagged estimator is cheapest but loses quality: every16 (x1.08) is judged, and passes.
    lagged_worse = _worse(synthetic, "cnn_gd", "cdat_lagged", 1.3)
    assert _statuses(synthetic, lagged_worse)["C7.cheap_cdat_cost"] == "PASS"
    # ... and fails when it costs more than 1.10x a plain step.
    costs = synthetic.cheap_costs(lagged=1.0, every16=1.12)
    statuses = _statuses(synthetic, lagged_worse, costs=costs)
    assert statuses["C7.cheap_cdat_cost"] == "FAIL"
    assert statuses["C8.cheap_cdat_quality"] == "PASS"


def test_too_expensive_estimators_fail_the_cost_alone(synthetic):
    statuses = _statuses(synthetic, costs=synthetic.cheap_costs(lagged=1.2, every16=1.15))
    assert statuses["C7.cheap_cdat_cost"] == "FAIL"
    assert statuses["C8.cheap_cdat_quality"] == "PASS"


def test_only_the_full_budget_runs_them():
    assert {claims.CLAIMS[i].budgets for i in IDS} == {claims.FULL_ONLY}
