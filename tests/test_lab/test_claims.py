"""cdat_core.lab.claims: synthetic runs where each claim must pass, and where it must fail."""

import copy
import json
import math

import numpy as np
import pytest

from cdat_core.lab import claims, report

STEPS, RECORD = 1000, 100


def _run(tuner, hp, lr, sharpness, final, *, lam0=50.0, steps=STEPS, first_loss=2.0):
    """A run dict: ``lr(t)`` per step, ``sharpness(t)`` at the records, loss to ``final``."""
    t = np.arange(steps)
    rec = np.arange(RECORD, steps + 1, RECORD)
    eta = np.array([lr(s) for s in t], float)
    lam = np.array([sharpness(s) for s in rec], float)
    loss = first_loss * (final / first_loss) ** (t / (steps - 1))
    return {
        "tuner": tuner,
        "hyperparams": hp,
        "num_steps": steps,
        "final_loss": float(np.mean(loss[-5:])),
        "initial_sharpness": lam0,
        "step": t.tolist(),
        "loss": loss.tolist(),
        "learning_rate": eta.tolist(),
        "grad_norm": np.ones(steps).tolist(),
        "record_step": rec.tolist(),
        "sharpness": lam.tolist(),
        "eos": (eta[rec - 1] * lam).tolist(),
    }


def _ramp(a, b):
    return lambda s: a + (b - a) * s / STEPS


def _experiment(runs, selected):
    return {"description": "synthetic", "runs": runs, "selected": selected}


def _gd():
    runs = {}
    for eta, final in ((0.01, 0.2), (0.02, 0.1), (0.04, 0.05), (0.08, math.nan)):
        lam = _ramp(40.0, 2.0 / eta) if eta * 50 <= 2 else (lambda s: math.nan)
        runs[report.label("constant", {"learning_rate": eta})] = _run(
            "constant", {"learning_rate": eta}, lambda s, e=eta: e, lam, final
        )
    ls_lr, greedy_lr = _ramp(0.05, 0.01), _ramp(0.04, 0.01)  # sharpening just below the edge:
    runs["linesearch c=0"] = _run(
        "linesearch", {"c": 0.0}, ls_lr, lambda s: 1.8 / ls_lr(s - 1), 0.08
    )
    runs["cdat σ=1"] = _run(
        "cdat", {"sigma": 1.0}, greedy_lr, lambda s: 1.6 / greedy_lr(s - 1), 0.09
    )
    runs["cdat σ=1.9375"] = _run("cdat", {"sigma": 1.9375}, _ramp(0.05, 0.02), _ramp(35, 95), 0.06)
    warm = lambda s: 0.02 if s == 0 else min(0.1, 0.02 + 0.08 * s / 150)  # noqa: E731
    runs["cdat σ=2"] = _run("cdat", {"sigma": 2.0}, warm, lambda s: 20.5, 0.04)
    runs["cdat σ=2.0625"] = _run("cdat", {"sigma": 2.0625}, warm, lambda s: 19.0, 0.035)
    runs["cdat σ=2.5"] = _run("cdat", {"sigma": 2.5}, warm, lambda s: 30.0, math.inf)
    runs["polyak η_max=1"] = _run(
        "polyak", {"max_learning_rate": 1.0}, lambda s: 0.2, _ramp(20, 25), 0.045
    )
    runs["hypergradient β=0.01"] = _run(
        "hypergradient", {"beta": 0.01}, lambda s: 0.03, _ramp(40, 60), 0.055
    )
    runs["warmup_cosine peak=0.1"] = _run(
        "warmup_cosine", {"peak_learning_rate": 0.1}, _ramp(0.0, 0.1), lambda s: 20, 0.03
    )
    runs["sharpness σ=2"] = _run(
        "sharpness", {"sigma": 2.0}, lambda s: 0.04, lambda s: 50, 0.5, steps=500
    )
    runs["sharpness σ=3"] = _run(
        "sharpness", {"sigma": 3.0}, lambda s: 0.06, lambda s: 50, 0.2, steps=500
    )
    selected = {
        "constant": "constant η=0.04",
        "linesearch": "linesearch c=0",
        "greedy": "cdat σ=1",
        "cdat": "cdat σ=2",
        "polyak": "polyak η_max=1",
        "hypergradient": "hypergradient β=0.01",
        "warmup_cosine": "warmup_cosine peak=0.1",
    }
    return _experiment(runs, selected)


def _base():
    runs = {
        "constant η=0.01": _run(
            "constant", {"learning_rate": 0.01}, lambda s: 0.01, lambda s: 100, 0.1
        ),
        "cdat σ=1": _run("cdat", {"sigma": 1.0}, lambda s: 0.01, lambda s: 100, 0.2),
        "cdat σ=2": _run("cdat", {"sigma": 2.0}, lambda s: 0.02, lambda s: 100, 0.11),
    }
    return _experiment(runs, {"constant": "constant η=0.01"})


def _models():
    t = np.arange(101)
    lam = 2.0 + 0.2 * np.sin(t)
    classical = 1.9 * np.exp(t / 40)
    cdat_t = np.arange(601)
    return {
        "constant": {
            "learning_rate": [1.0] * 101,
            "sharpness": lam.tolist(),
            "diverged": [False] * 101,
        },
        "classical": {
            "learning_rate": (1.9 / classical).tolist(),
            "sharpness": classical.tolist(),
            "y": [-0.1] * 101,
        },
        "cdat_2": {
            "y": (4e-4 * np.ones(601)).tolist(),
            "p": (0.08 + 1e-5 * cdat_t).tolist(),
            "sharpness": [20.0] * 601,
        },
        "cdat_1.9": {
            "y": (-0.01 * np.ones(601)).tolist(),
            "p": np.exp(-cdat_t / 30).tolist(),
            "sharpness": [21.0] * 601,
        },
    }


def _ideal():
    return {
        "budget": "synthetic",
        "identity": {
            "sharpness": 10.0,
            "smallest_eigenvalue": 0.1,
            "on_edge_aligned": 0.2,
            "greedy_aligned": 0.1,
            "on_edge_random": [0.25, 1.0, 5.0],
            "model_gap_random": [1e-7, 0.0, 2e-7],
        },
        "experiments": {"gd": _gd(), "momentum": _base(), "adam": _base(), "cnn_gd": _base()},
        "models": _models(),
        "costs": {
            "description": "synthetic",
            "ratios": {
                "directional_curvature/objective flops": 3.1,
                "directional_curvature/objective bytes": 2.9,
                "directional_curvature/hvp_dot temp_bytes": 0.5,
                "directional_curvature/objective wall": 3.3,
                "sgd+cdat/sgd wall": 2.1,
                "sgd+cdat/sgd flops": 2.0,
            },
        },
    }


def _statuses(results):
    return {c.id: c.status for c in claims.evaluate_claims(results)}


def test_paper_like_results_pass_every_claim():
    statuses = _statuses(_ideal())
    assert len(statuses) >= 35
    assert set(statuses.values()) == {"PASS"}, {k: v for k, v in statuses.items() if v != "PASS"}


def _set(path, value):
    def mutate(r):
        *keys, last = path
        node = r
        for k in keys:
            node = node[k]
        node[last] = value(node[last]) if callable(value) else value

    return mutate


def _replace_run(exp, label, **kw):
    def mutate(r):
        run = r["experiments"][exp]["runs"][label]
        new = _run(
            run["tuner"],
            run["hyperparams"],
            kw.get("lr", lambda s: run["learning_rate"][s]),
            kw.get("sharpness", lambda s: run["sharpness"][s // RECORD - 1]),
            kw.get("final", run["final_loss"]),
            steps=run["num_steps"],
        )
        r["experiments"][exp]["runs"][label] = new

    return mutate


GD = ("experiments", "gd", "runs")
FAILURES = {
    "I1.aligned": _set(("identity", "on_edge_aligned"), 0.21),
    "I2.on_edge_model": _set(("identity", "on_edge_random"), [0.1, 1.0]),  # 0.1 < 2/λ_max
    "F1.linesearch.lr_falls_sharpness_rises": _replace_run(
        "gd", "linesearch c=0", lr=_ramp(0.01, 0.05)
    ),
    "F1.linesearch.below_edge": _replace_run(
        "gd", "linesearch c=0", lr=lambda s: 0.03, sharpness=lambda s: 80.0
    ),
    "F1.linesearch.loses_to_constant": _replace_run("gd", "linesearch c=0", final=0.01),
    "F1.greedy.lr_falls_sharpness_rises": _replace_run("gd", "cdat σ=1", sharpness=lambda s: 40.0),
    "F1.greedy.below_edge": _replace_run(
        "gd", "cdat σ=1", lr=lambda s: 0.005, sharpness=lambda s: 100.0
    ),
    "F1.greedy.loses_to_constant": _replace_run("gd", "cdat σ=1", final=0.04),
    "F2.tuned_constant_at_edge": _replace_run("gd", "constant η=0.04", sharpness=lambda s: 30.0),
    "F2.sharpens_to_edge": _replace_run("gd", "constant η=0.04", sharpness=_ramp(50.0, 50.0)),
    "F3.cdat2.warmup": _replace_run("gd", "cdat σ=2", lr=lambda s: 0.1),
    "F3.cdat2.no_sharpening": _replace_run("gd", "cdat σ=2", sharpness=_ramp(20, 40)),
    "F3.cdat2.on_edge": _replace_run("gd", "cdat σ=2", sharpness=lambda s: 30.0),
    "F3.cdat2.on_par_with_constant": _replace_run("gd", "cdat σ=2", final=0.07),
    "F3.greedy_worse_than_cdat2": _replace_run("gd", "cdat σ=1", final=0.03),
    "F3.sigma_2.0625_best": _replace_run("gd", "cdat σ=2.0625", final=0.045),
    "F3.sigma_2.5_diverges": _replace_run("gd", "cdat σ=2.5", final=0.5),
    "F3.sigma_1.9375_sharpens": _replace_run("gd", "cdat σ=1.9375", sharpness=lambda s: 35.0),
    "B.polyak_larger_steps": _replace_run("gd", "polyak η_max=1", lr=lambda s: 0.01),
    "B.hypergradient_on_par_and_sharpens": _replace_run(
        "gd", "hypergradient β=0.01", sharpness=lambda s: 40.0
    ),
    "B.exact_sharpness_rule": _replace_run("gd", "sharpness σ=3", final=0.9),
    "B.warmup_schedule_vs_cdat": _replace_run("gd", "warmup_cosine peak=0.1", final=0.2),
    "F3.momentum.on_par_with_constant": _replace_run("momentum", "cdat σ=2", final=0.2),
    "F3.adam.greedy_worse": _replace_run("adam", "cdat σ=1", final=0.05),
    "F3.cnn_gd.on_par_with_constant": _replace_run("cnn_gd", "cdat σ=2", final=math.nan),
    "D1.constant_oscillates_at_edge": _set(
        ("models", "constant", "sharpness"), lambda x: [2.5] * len(x)
    ),
    "D2.classical_runaway_sharpening": _set(
        ("models", "classical", "sharpness"), lambda x: x[::-1]
    ),
    "D3.cdat2_holds_edge": _set(("models", "cdat_2", "y"), lambda y: [0.05] * len(y)),
    "D4.cdat1.9_sharpens": _set(("models", "cdat_1.9", "sharpness"), lambda x: [19.0] * len(x)),
    "C1.curvature_flops": _set(("costs", "ratios", "directional_curvature/objective flops"), 9.0),
    "C2.curvature_memory": _set(("costs", "ratios", "directional_curvature/objective bytes"), 11.0),
    "C3.curvature_wall_time": _set(
        ("costs", "ratios", "directional_curvature/objective wall"), 1.2
    ),
    "C4.cdat_step_wall_time": _set(("costs", "ratios", "sgd+cdat/sgd wall"), None),  # NaN
    "C5.cdat_step_flops": _set(("costs", "ratios", "sgd+cdat/sgd flops"), 3.5),
    "C6.forward_mode_memory": _set(
        ("costs", "ratios", "directional_curvature/hvp_dot temp_bytes"), 1.2
    ),
}


@pytest.mark.parametrize("claim_id", sorted(FAILURES))
def test_a_run_against_the_claim_makes_it_fail_and_only_it(claim_id):
    results = copy.deepcopy(_ideal())
    FAILURES[claim_id](results)
    statuses = _statuses(results)
    assert statuses[claim_id] == "FAIL"
    others = {k: v for k, v in statuses.items() if k != claim_id and v != "PASS"}
    # a change to a shared reference run may flip its direct dependents only
    assert all(v == "FAIL" for v in others.values())
    assert len(others) <= 2, others


def test_every_claim_has_a_failing_case():
    assert set(_statuses(_ideal())) - set(FAILURES) <= {
        "F3.momentum.greedy_worse",
        "F3.adam.on_par_with_constant",
        "F3.cnn_gd.greedy_worse",
    }


def test_missing_results_are_not_evaluated():
    out = claims.evaluate_claims({})
    assert out and all(c.status == "N/A" and c.passed is None for c in out)
    partial = _ideal()
    del partial["experiments"]["adam"]
    statuses = _statuses(partial)
    assert statuses["F3.adam.on_par_with_constant"] == "N/A"
    assert statuses["F3.momentum.on_par_with_constant"] == "PASS"


def test_json_round_trip_keeps_every_status():
    results = _ideal()
    FAILURES["F3.sigma_2.5_diverges"](results)
    results["experiments"]["gd"]["runs"]["cdat σ=2.5"]["final_loss"] = math.inf
    text = json.dumps(report.sanitize(results), allow_nan=False)
    assert _statuses(json.loads(text)) == _statuses(_ideal())


def test_failing_claims_report_their_numbers():
    results = _ideal()
    FAILURES["F3.cdat2.on_edge"](results)
    (claim,) = [c for c in claims.evaluate_claims(results) if c.id == "F3.cdat2.on_edge"]
    assert claim.status == "FAIL"
    assert claim.values["eos"] == pytest.approx(0.1 * 30.0)
    assert "3" in claim.measured
    assert claim.statement and claim.criterion and claim.source.startswith("synthetic")


def test_table_lists_every_claim_and_the_counts():
    out = claims.evaluate_claims(_ideal())
    text = claims.format_table(out)
    for c in out:
        assert c.id in text
    counts = claims.summary(out)
    assert (
        text.splitlines()[-1]
        == f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['N/A']} N/A"
    )
