"""cdat_core.lab.plans: the budgets' plans are what the registered claims need of them."""

import pytest

from cdat_core.lab import claims, needs, plans, verify
from cdat_core.lab.claims import CLAIMS, claim


@pytest.fixture(scope="module", params=plans.BUDGETS)
def budget(request):
    return request.param


def _needs(budget):
    return [n for c in CLAIMS.values() if budget in c.budgets for n in c.needs.values()]


def test_every_claim_of_a_budget_has_its_needs_met_by_its_plan(budget):
    plan = verify.PLANS[budget]()
    for spec in CLAIMS.values():
        if budget in spec.budgets:
            assert plans.unmet(plan, spec.needs.values()) == [], spec.id
    assert all(budget in spec.budgets for spec in CLAIMS.values()) == (budget == "full")


def test_full_only_claims_are_those_the_quick_plan_cannot_check():
    quick = verify.PLANS["quick"]()
    for spec in CLAIMS.values():
        if "quick" not in spec.budgets:
            assert plans.unmet(quick, spec.needs.values()), f"{spec.id} could be BOTH"


def test_a_plan_holds_nothing_no_claim_needs(budget):
    plan = verify.PLANS[budget]()
    wanted = _needs(budget)
    for sweep in plan.sweeps:
        assert any(plans.provides(plan, sweep, n) for n in wanted), sweep
    used = {s.experiment for s in plan.sweeps} | set(plan.measurements.values()) - {""}
    assert set(plan.experiments) == used
    assert set(plan.measurements) == {n.name for n in wanted if n.kind == "measured"}


def test_every_catalog_sweep_is_needed_so_plans_are_the_catalogs(budget):
    plan, catalog = verify.PLANS[budget](), plans.CATALOGS[budget]()
    assert plan.sweeps == catalog.sweeps
    assert plan.experiments == catalog.experiments
    expected = {"identity": "", "models": "", "costs": "gd", "minibatch": ""}
    if budget == "full":  # the cheap CDAT claims (C7) are full-budget only
        expected["cheap_costs"] = "gd"
    assert plan.measurements == expected


def test_quick_runs_gd_only_and_full_every_experiment():
    assert list(verify.PLANS["quick"]().experiments) == ["gd"]
    assert list(verify.PLANS["full"]().experiments) == [
        "gd",
        "momentum",
        "adam",
        "cnn_gd",
        "cnn_adam",
    ]


def test_a_claim_needing_runs_its_budget_lacks_is_refused():
    with CLAIMS.scoped():

        @claim(
            id="T.polyak_quick",
            group="toy",
            statement="s",
            criterion="c",
            needs={"polyak": needs.selected("gd", "polyak")},
        )
        def check(polyak):
            return True, "", {}

        with pytest.raises(ValueError, match=r"T\.polyak_quick.*quick catalog lacks"):
            plans.build_plan("quick", CLAIMS.values())
        assert plans.build_plan("full", CLAIMS.values()).sweeps == plans.CATALOGS["full"]().sweeps


def test_a_measurement_on_two_experiments_is_refused():
    with CLAIMS.scoped():
        claim(
            id="T.costs_momentum",
            group="toy",
            statement="s",
            criterion="c",
            needs={"costs": needs.measured("costs", experiment="momentum")},
            budgets=claims.FULL_ONLY,
        )(lambda costs: None)
        with pytest.raises(ValueError, match="costs on both 'gd' and 'momentum'"):
            plans.build_plan("full", CLAIMS.values())


def test_unknown_budget_raises():
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        plans.build_plan("huge", CLAIMS.values())


def test_selected_needs_match_select_sweeps_or_designated_points():
    plan = plans.CATALOGS["full"]()
    gd_cdat = next(s for s in plan.sweeps if (s.experiment, s.tuner) == ("gd", "cdat"))
    gd_sharp = next(s for s in plan.sweeps if s.tuner == "sharpness")
    assert plans.provides(plan, gd_cdat, needs.selected("gd", "greedy"))
    assert plans.provides(plan, gd_cdat, needs.selected("gd", "cdat")) is not False
    assert not plans.provides(plan, gd_sharp, needs.selected("gd", "sharpness"))  # select=False
    assert not plans.provides(plan, gd_cdat, needs.selected("momentum", "greedy"))
    adam = next(s for s in plan.sweeps if (s.experiment, s.tuner) == ("adam", "cdat"))
    assert plans.provides(plan, adam, needs.run("adam", "cdat", sigma=2.0, ema_decay=0.9))
    assert not plans.provides(plan, adam, needs.run("adam", "cdat", sigma=2.0, ema_decay=0.0))


def test_experiment_descriptions_come_from_the_registries():
    spec = plans.CATALOGS["full"]().experiments["cnn_gd"]
    assert spec.description() == "digits CNN (channels 8, 16), 512 examples, full batch, GD"
    problem = spec.build(seed=0)
    assert problem.inputs.shape[0] == 512
