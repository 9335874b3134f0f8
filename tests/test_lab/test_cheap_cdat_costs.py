"""cdat_core.lab.cheap_cdat: the main job's cheap estimators and their amortized step cost."""

from cdat_core.lab import cheap_cdat, problems, tuners


def test_a_reuse_step_costs_a_plain_step_and_a_refresh_the_exact_curvature():
    problem = problems.subset(problems.digits_mlp((16,)), 64)
    exact = cheap_cdat.step_costs(problem, "gd", "cdat")
    every16 = cheap_cdat.step_costs(problem, "gd", "cdat_every16")
    assert every16["every"] == 16
    # The folded reuse branch has no curvature: within 5 % of a plain GD step ...
    assert every16["reuse"] <= 1.05 * every16["plain"]
    # ... and the refresh computes the exact curvature (exact CDAT's step, to a few flops).
    assert abs(every16["refresh"] - exact["refresh"]) <= 1e-3 * exact["refresh"]
    assert 1.0 < every16["amortized"] < exact["amortized"]


def test_the_lagged_estimator_costs_a_plain_step_once_it_has_a_previous_step():
    problem = problems.subset(problems.digits_mlp((16,)), 64)
    lagged = cheap_cdat.step_costs(problem, "gd", "cdat_lagged")
    # The step's state as an argument would count the first update's probe (one forward).
    assert lagged["every"] == 1 and lagged["amortized"] <= 1.10  # 1.04 here, 1.004 at 128-128


def test_the_estimators_are_tuners_with_their_settings():
    for name in cheap_cdat.ESTIMATORS:
        spec = tuners.TUNERS.lookup(name)
        assert spec.static["every"] == cheap_cdat.EVERY[name]
        assert set(spec.defaults) == {"sigma", "ema_decay"}
    assert tuners.TUNERS.lookup("cdat_lagged").static["curvature"] == "lagged"
    assert tuners.TUNERS.lookup("cdat_every16").static["curvature"] == "exact"
