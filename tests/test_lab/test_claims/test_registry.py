"""cdat_core.lab.claims.registry: the @claim decorator, the CLAIMS registry and evaluation."""

import json
import math

import pytest

from cdat_core.lab import claims, needs, report
from cdat_core.lab.claims import CLAIMS, claim

#: The report's order (that of the claims tables before the registry): a contract.
REPORT_ORDER = [
    "I1.aligned",
    "I2.on_edge_model",
    "F1.linesearch.lr_falls_sharpness_rises",
    "F1.linesearch.below_edge",
    "F1.linesearch.loses_to_constant",
    "F1.greedy.lr_falls_sharpness_rises",
    "F1.greedy.below_edge",
    "F1.greedy.loses_to_constant",
    "F2.tuned_constant_at_edge",
    "F2.sharpens_to_edge",
    "F3.cdat2.warmup",
    "F3.cdat2.no_sharpening",
    "F3.cdat2.on_edge",
    "F3.cdat2.on_par_with_constant",
    "F3.greedy_worse_than_cdat2",
    "F3.sigma_2.0625_best",
    "F3.sigma_2.5_diverges",
    "F3.sigma_1.9375_sharpens",
    "B.polyak_larger_steps",
    "B.hypergradient_on_par_and_sharpens",
    "B.exact_sharpness_rule",
    "B.warmup_schedule_vs_cdat",
    "B.greedy_larger_instant_decrease",
    "B.cdat_updates_oppose",
    "B.tuner_alignment_with_top_eigenvector",
    "F3.momentum.on_par_with_constant",
    "F3.momentum.greedy_worse",
    "F3.adam.on_par_with_constant",
    "F3.adam.greedy_worse",
    "F3.cnn_gd.on_par_with_constant",
    "F3.cnn_gd.greedy_worse",
    "D1.constant_oscillates_at_edge",
    "D2.classical_runaway_sharpening",
    "D3.cdat2_holds_edge",
    "D4.cdat1.9_sharpens",
    "C1.curvature_flops",
    "C2.curvature_memory",
    "C3.curvature_wall_time",
    "C4.cdat_step_wall_time",
    "C5.cdat_step_flops",
    "C6.forward_mode_memory",
    "C7.cheap_cdat_cost",
    "C8.cheap_cdat_quality",
    "M1.optimal_sigma_grows_with_batch",
    "M2.greedy_beats_on_edge_at_small_batch",
    "M3.ema_smooths_sigma_choice",
    "M4.linesearch_works_in_minibatch",
    "M5.minibatch_linesearch_takes_larger_steps",
    "M6.schedule_beats_cdat_in_minibatch",
]

MODELS = needs.measured("models", about="toy models")


def test_claims_are_registered_once_each_in_report_order():
    assert list(CLAIMS) == REPORT_ORDER
    assert [c.id for c in claims.evaluate_claims({})] == REPORT_ORDER
    assert len({spec.id for spec in CLAIMS.values()}) == len(CLAIMS)


def test_every_claim_declares_its_needs_and_budgets():
    for spec in CLAIMS.values():
        assert spec.needs and spec.statement and spec.criterion and spec.group
        assert "full" in spec.budgets and set(spec.budgets) <= {"quick", "full"}


def test_missing_results_are_not_evaluated():
    out = claims.evaluate_claims({})
    assert out and all(c.status == "N/A" and c.passed is None for c in out)
    assert all(c.measured == "not evaluated in this budget" for c in out)


def test_a_missing_need_makes_the_claim_na_without_calling_it():
    def check(models):
        raise AssertionError("called without its needs")

    with CLAIMS.scoped():
        spec = claim(
            id="T.na", group="toy", statement="s", criterion="c", needs={"models": MODELS}
        )(check)
        result = spec.evaluate({"budget": "b"})
    assert result.status == "N/A" and result.source == "b: toy models"


def test_a_check_returning_none_is_na_and_values_pass_through():
    with CLAIMS.scoped():

        @claim(id="T.none", group="toy", statement="s", criterion="c", needs={"models": MODELS})
        def none(models):
            return None

        @claim(id="T.fail", group="toy", statement="s", criterion="c", needs={"models": MODELS})
        def fail(models):
            return 0, "measured 2", {"x": 2.0}

        results = {"budget": "b", "models": {"a": [1.0]}}
        out = {c.id: c for c in claims.evaluate_claims(results)}
    assert out["T.none"].status == "N/A"
    assert out["T.fail"].status == "FAIL" and out["T.fail"].passed is False
    assert out["T.fail"].values == {"x": 2.0} and out["T.fail"].measured == "measured 2"
    assert list(out)[-2:] == ["T.none", "T.fail"]  # appended after the paper's claims
    assert "T.none" not in CLAIMS and list(CLAIMS) == REPORT_ORDER


@pytest.mark.parametrize(
    "kwargs, check, match",
    [
        ({"id": "I1.aligned", "needs": {"m": MODELS}}, lambda m: None, "already registered"),
        ({"id": "T.x", "needs": {"m": MODELS}}, lambda models: None, "not its needs"),
        ({"id": "T.x", "needs": {"m": MODELS}}, lambda m, extra: None, "not its needs"),
        ({"id": "T.x", "needs": {}}, lambda: None, "needs nothing"),
    ],
)
def test_bad_declarations_raise(kwargs, check, match):
    with CLAIMS.scoped(), pytest.raises(ValueError, match=match):
        claim(group="toy", statement="s", criterion="c", **kwargs)(check)
    assert list(CLAIMS) == REPORT_ORDER


def test_a_check_may_bind_loop_values_as_defaults():
    with CLAIMS.scoped():
        for k in (1, 2):

            @claim(id=f"T.k{k}", group="toy", statement="s", criterion="c", needs={"m": MODELS})
            def check(m, k=k):
                return True, str(k), {"k": float(k)}

        out = {c.id: c.measured for c in claims.evaluate_claims({"models": {"a": 1}})}
    assert out["T.k1"] == "1" and out["T.k2"] == "2"


def test_json_round_trip_keeps_every_status(synthetic):
    results = synthetic.ideal()
    results["experiments"]["gd"]["runs"]["cdat σ=2.5"]["final_loss"] = math.inf
    text = json.dumps(report.sanitize(results), allow_nan=False)
    assert synthetic.statuses(json.loads(text)) == synthetic.statuses(synthetic.ideal())
