"""cdat_core.lab.needs: what a claim needs, its label, and where it is found in results."""

import pytest

from cdat_core.lab import needs

RESULTS = {
    "identity": {"sharpness": 1.0},
    "models": {},
    "experiments": {
        "gd": {
            "runs": {
                "cdat σ=2": {"tuner": "cdat", "id": 1},
                "cdat σ=1": {"tuner": "cdat", "id": 2},
                "constant η=0.1": {"tuner": "constant", "id": 3},
            },
            "selected": {"constant": "constant η=0.1", "greedy": "cdat σ=1", "gone": "x"},
        }
    },
}


def test_runs_are_found_by_label():
    assert needs.run("gd", "cdat", sigma=2.0).resolve(RESULTS)["id"] == 1
    assert needs.run("gd", "cdat", sigma=2.0, ema_decay=0.9).label == "cdat σ=2"
    assert needs.run("gd", "cdat", sigma=3.0).resolve(RESULTS) is None
    assert needs.run("adam", "cdat", sigma=2.0).resolve(RESULTS) is None


def test_selected_runs_and_grids():
    assert needs.selected("gd", "greedy").resolve(RESULTS)["id"] == 2
    assert needs.selected("gd", "constant").resolve(RESULTS)["id"] == 3
    assert needs.selected("gd", "polyak").resolve(RESULTS) is None
    assert [r["id"] for r in needs.grid("gd", "cdat").resolve(RESULTS)] == [1, 2]
    assert needs.grid("gd", "polyak").resolve(RESULTS) is None  # empty grid: N/A
    assert needs.selected("gd", "constant").label == "constant"


def test_measurements_missing_or_empty_are_none():
    assert needs.measured("identity").resolve(RESULTS) == {"sharpness": 1.0}
    assert needs.measured("models").resolve(RESULTS) is None
    assert needs.measured("costs", experiment="gd").resolve(RESULTS) is None


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: needs.run("gd", "cdat", beta=1.0), "no numbers"),
        (lambda: needs.run("gd", "cdat", ema_decay=0.9), "named by its 'sigma'"),
        (lambda: needs.selected("gd", "nope"), "unknown tuner"),
        (lambda: needs.grid("gd", "nope"), "unknown tuner"),
    ],
)
def test_bad_needs_raise_when_declared(make, match):
    with pytest.raises(ValueError, match=match):
        make()
