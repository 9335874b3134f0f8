"""cdat_core.lab.claims.verdicts: every claim on every seed, k/n, and the PASS/MIXED/FAIL rule."""

import math

import pytest

from cdat_core.lab import claims
from cdat_core.lab.claims import verdicts


@pytest.mark.parametrize(
    ("held", "total", "status"),
    [
        (5, 5, "PASS"),
        (4, 5, "PASS"),  # 80 % is PASS
        (3, 5, "MIXED"),
        (2, 5, "MIXED"),
        (1, 5, "FAIL"),  # 20 % is FAIL
        (0, 5, "FAIL"),
        (1, 2, "MIXED"),
        (2, 2, "PASS"),
        (8, 10, "PASS"),
        (7, 10, "MIXED"),
        (2, 10, "FAIL"),
        (0, 0, "N/A"),
    ],
)
def test_the_verdict_rule(held, total, status):
    assert verdicts.verdict(held, total) == status


def test_verdict_rejects_more_held_than_seeds():
    with pytest.raises(ValueError, match="held must be in"):
        verdicts.verdict(6, 5)


def _break_on_edge(results):
    """Make F3.cdat2.on_edge fail: σ=2 sits far above the edge."""
    run = results["experiments"]["gd"]["runs"]["cdat σ=2"]
    run["eos"] = [3.0 for _ in run["eos"]]


def test_a_claim_that_holds_in_3_of_5_seeds_is_mixed(synthetic):
    per_seed = {}
    for seed in range(5):
        results = synthetic.ideal()
        if seed in (1, 3):
            _break_on_edge(results)
        per_seed[seed] = results
    out = {v.id: v for v in claims.evaluate_over_seeds(per_seed)}
    v = out["F3.cdat2.on_edge"]
    assert (v.status, v.seeds_held, v.seeds_total) == ("MIXED", 3, 5)
    assert [o["status"] for o in v.per_seed] == ["PASS", "FAIL", "PASS", "FAIL", "PASS"]
    assert [o["seed"] for o in v.per_seed] == [0, 1, 2, 3, 4]
    # the figure is the check's first number, ηλ_max: 3 seeds at the ideal value, 2 at 3.0
    ideal = v.per_seed[0]["values"]["eos"]
    assert v.figure == "eos"
    assert (v.median, v.low, v.high) == (ideal, ideal, 3.0)
    assert v.measured.startswith("holds in 3/5 seeds; eos median ")
    # the other claims hold in every seed
    assert all(o.status == "PASS" for k, o in out.items() if k != v.id)
    assert all(o.seeds_total == 5 for o in out.values())


def test_one_failing_seed_of_five_still_passes_and_four_fail(synthetic):
    for broken, status in ((1, "PASS"), (4, "FAIL")):
        per_seed = {}
        for seed in range(5):
            results = synthetic.ideal()
            if seed < broken:
                _break_on_edge(results)
            per_seed[seed] = results
        v = next(v for v in claims.evaluate_over_seeds(per_seed) if v.id == "F3.cdat2.on_edge")
        assert (v.status, v.seeds_held) == (status, 5 - broken)


def test_seeds_that_cannot_evaluate_a_claim_are_not_counted(synthetic):
    per_seed = {0: synthetic.ideal(), 1: synthetic.ideal(), 2: synthetic.ideal()}
    del per_seed[2]["experiments"]["gd"]["runs"]["cdat σ=2.5"]
    v = next(v for v in claims.evaluate_over_seeds(per_seed) if v.id == "F3.sigma_2.5_diverges")
    assert (v.status, v.seeds_held, v.seeds_total) == ("PASS", 2, 2)
    assert v.per_seed[2]["status"] == "N/A"


def test_claims_on_shared_measurements_are_evaluated_once(synthetic):
    per_seed = {s: synthetic.ideal() for s in range(3)}
    out = {v.id: v for v in claims.evaluate_over_seeds(per_seed, shared={"costs", "models"})}
    assert out["C1.curvature_flops"].seeds_total == 1
    assert out["D1.constant_oscillates_at_edge"].seeds_total == 1
    assert out["I1.aligned"].seeds_total == 3  # identities are measured per seed
    assert out["F3.cdat2.on_edge"].seeds_total == 3


def test_a_claim_no_seed_evaluates_is_not_applicable():
    out = claims.evaluate_over_seeds({0: {"budget": "t"}, 1: {"budget": "t"}})
    assert {v.status for v in out} == {"N/A"}
    assert all(v.seeds_total == 0 and math.isnan(v.median) for v in out)


def test_mixed_verdicts_are_counted_and_shown(synthetic):
    per_seed = {s: synthetic.ideal() for s in range(2)}
    _break_on_edge(per_seed[1])
    out = claims.evaluate_over_seeds(per_seed)
    counts = claims.summary(out)
    assert counts["MIXED"] == 1 and counts["FAIL"] == 0
    text = claims.format_table(out)
    assert "MIXED F3.cdat2.on_edge  [finding 3]" in text
    assert "holds in 1/2 seeds" in text
    assert text.splitlines()[-1] == (f"{counts['PASS']} PASS, 1 MIXED, 0 FAIL, {counts['N/A']} N/A")


def test_the_markdown_table_has_one_row_per_claim_with_k_of_n_and_the_spread(synthetic):
    per_seed = {s: synthetic.ideal() for s in range(5)}
    for s in (1, 3):
        _break_on_edge(per_seed[s])
    out = claims.evaluate_over_seeds(per_seed)
    # from plain dicts, as report.json holds them
    text = claims.format_markdown([v._asdict() for v in out])
    lines = text.splitlines()
    assert len(lines) == 2 + len(out)
    row = next(line for line in lines if "`F3.cdat2.on_edge`" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "MIXED" and cells[3] == "3/5"
    assert cells[4].startswith("eos ") and ", 3]" in cells[4]
    assert "seed 0:" in cells[4]
    # a claim no seed evaluates has no k/n
    na = claims.format_markdown(
        [v._asdict() for v in claims.evaluate_over_seeds({0: {"budget": "t"}})]
    )
    assert all(line.split("|")[4].strip() == "-" for line in na.splitlines()[2:])


def test_the_markdown_table_escapes_pipes_in_the_text():
    row = {
        "id": "X",
        "status": "PASS",
        "statement": "|a|",
        "seeds_held": 1,
        "seeds_total": 1,
        "figure": "",
        "median": math.nan,
        "low": math.nan,
        "high": math.nan,
        "per_seed": [{"seed": 0, "status": "PASS", "measured": "x |y|"}],
    }
    line = claims.format_markdown([row]).splitlines()[-1]
    assert line.count("|") - line.count("\\|") == 6
    assert "\\|a\\|" in line and "x \\|y\\|" in line
