"""Synthetic, paper-like results for the claims tests, and the helpers that break one claim.

The fixture ``synthetic`` is a namespace: ``ideal()`` builds results in which every claim
holds; ``replace_run`` and ``set_path`` return mutations that make one claim fail;
``statuses`` evaluates every registered claim; ``module_claims`` lists the ids a claims
module registers.
"""

import importlib.util
import math
import types
from pathlib import Path

import numpy as np
import pytest

from cdat_core.lab import claims, report

STEPS, RECORD = 1000, 100


def _run(
    tuner,
    hp,
    lr,
    sharpness,
    final,
    *,
    lam0=50.0,
    steps=STEPS,
    first_loss=2.0,
    cosine=-0.9,
    alignment=0.8,
    gap=math.nan,
):
    """A run dict: ``lr(t)`` per step, ``sharpness(t)`` at the records, loss to ``final``.

    ``cosine`` (successive updates), ``alignment`` (with the top eigenvector) and ``gap`` (the
    instant gap of Fig. 16) are constant; the defaults are those of a run at the edge.
    """
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
        "update_cosine": [0.0] + [cosine] * (steps - 1),
        "alignment": [alignment] * rec.size,
        "instant_gap": [gap] * rec.size,
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
        "linesearch", {"c": 0.0}, ls_lr, lambda s: 1.8 / ls_lr(s - 1), 0.08, alignment=0.3
    )
    # Below the edge: successive updates not opposed, less aligned; greedy steps better at once.
    runs["cdat σ=1"] = _run(
        "cdat",
        {"sigma": 1.0},
        greedy_lr,
        lambda s: 1.6 / greedy_lr(s - 1),
        0.09,
        cosine=0.3,
        alignment=0.2,
        gap=0.01,
    )
    runs["cdat σ=1.9375"] = _run("cdat", {"sigma": 1.9375}, _ramp(0.05, 0.02), _ramp(35, 95), 0.06)
    warm = lambda s: 0.02 if s == 0 else min(0.1, 0.02 + 0.08 * s / 150)  # noqa: E731
    runs["cdat σ=2"] = _run("cdat", {"sigma": 2.0}, warm, lambda s: 20.5, 0.04, gap=0.02)
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
    _add_cheap(runs, "cdat σ=2")
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
    _add_cheap(runs, "cdat σ=2")
    return _experiment(runs, {"constant": "constant η=0.01"})


def _add_cheap(runs, exact):
    """Cheap CDAT runs (claims C7, C8) within 1-2 % of the exact run's final loss."""
    run = runs[exact]
    for tuner, factor in (("cdat_lagged", 1.02), ("cdat_every16", 1.01)):
        runs[f"{tuner} σ=2"] = _run(
            tuner,
            {"sigma": 2.0},
            lambda s, r=run: r["learning_rate"][s],
            lambda s, r=run: r["sharpness"][s // RECORD - 1],
            run["final_loss"] * factor,
            steps=run["num_steps"],
        )


def _cheap_costs(lagged=1.01, every16=1.08):
    per_problem = {
        "cdat": {"amortized": 2.2},
        "cdat_lagged": {"amortized": lagged},
        "cdat_every16": {"amortized": every16},
    }
    return {"problems": {"mlp": per_problem, "cnn": dict(per_problem)}, "base": "gd"}


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


def _minibatch_study():
    """The paper-like mini-batch study of ``tests/test_lab/test_minibatch_claims.py``."""
    path = Path(__file__).parent.parent / "test_minibatch_claims.py"
    spec = importlib.util.spec_from_file_location("_minibatch_claims_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def smooth_with_ema(b, s, beta):  # M3: with an EMA the best σ stays put
        if beta == 0.0:
            return 0.2 + 0.1 * abs(s - (0.4 if b < 64 else 2.8)) * (1 + b / 512)
        return 0.2 + 0.1 * abs(s - 1.6)

    return module.study(smooth_with_ema)


def _ideal():
    return {
        "minibatch": _minibatch_study(),
        "budget": "synthetic",
        "identity": {
            "sharpness": 10.0,
            "smallest_eigenvalue": 0.1,
            "on_edge_aligned": 0.2,
            "greedy_aligned": 0.1,
            "on_edge_random": [0.25, 1.0, 5.0],
            "model_gap_random": [1e-7, 0.0, 2e-7],
        },
        "experiments": {
            "gd": _gd(),
            "momentum": _base(),
            "adam": _base(),
            "cnn_gd": _base(),
            "cnn_adam": _base(),
        },
        "cheap_costs": _cheap_costs(),
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


def _set_path(path, value):
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
            cosine=kw.get("cosine", run["update_cosine"][-1]),
            alignment=kw.get("alignment", run["alignment"][-1]),
            gap=kw.get("gap", run["instant_gap"][-1]),
        )
        r["experiments"][exp]["runs"][label] = new

    return mutate


def _statuses(results):
    return {c.id: c.status for c in claims.evaluate_claims(results)}


def _module_claims(module):
    return {cid for cid, spec in claims.CLAIMS.items() if spec.check.__module__ == module.__name__}


def _fails_alone(claim_id, mutate):
    """Break ``claim_id`` with ``mutate``: it must FAIL, and at most 2 direct dependents too."""
    results = _ideal()
    mutate(results)
    statuses = _statuses(results)
    assert statuses[claim_id] == "FAIL"
    others = {k: v for k, v in statuses.items() if k != claim_id and v != "PASS"}
    # a change to a shared reference run may flip its direct dependents only
    assert all(v == "FAIL" for v in others.values())
    assert len(others) <= 2, others


@pytest.fixture
def synthetic():
    return types.SimpleNamespace(
        STEPS=STEPS,
        RECORD=RECORD,
        ideal=_ideal,
        ramp=_ramp,
        replace_run=_replace_run,
        set_path=_set_path,
        statuses=_statuses,
        module_claims=_module_claims,
        fails_alone=_fails_alone,
        cheap_costs=_cheap_costs,
    )
