"""cdat_core.lab.verify: a toy tuner, problem and claim, each one registration, run end to end.

The toy entries below are all an extension needs: a ``TunerSpec`` (one entry of
``tuners.py``), a ``ProblemSpec`` (one entry of ``problems.py``), a claim (one decorated
function of a ``claims/`` module) and the budget's sweep of the new runs (a catalog of
``plans.py``); nothing else in the lab changes.
"""

import contextlib
import json
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from cdat_core.lab import needs, plans, problems, tuners, verify
from cdat_core.lab.claims import CLAIMS, claim


class LeastSquares(NamedTuple):
    params: Any
    inputs: Any
    targets: Any

    @staticmethod
    def loss(params, inputs, targets):
        return 0.5 * jnp.mean((inputs @ params - targets) ** 2)


def _least_squares(size, *, num_examples, seed):
    data = np.random.default_rng(0)  # the data does not depend on the seed
    inputs = data.standard_normal((num_examples, size[0])) / np.sqrt(size[0])
    targets = inputs @ np.ones(size[0])
    w0 = np.random.default_rng(seed).standard_normal(size[0])
    return LeastSquares(*(jnp.asarray(x, jnp.float32) for x in (w0, inputs, targets)))


def _halving(hp, static):
    return tuners.scale_by_scheduled_learning_rate(0.5 * hp["learning_rate"])


def _descends(run):
    first, final = run["loss"][0], run["final_loss"]
    return final < 0.5 * first, f"loss {first:.3g} -> {final:.3g}", {"first": first}


def _toy_catalog():
    sweeps = (
        plans.SweepSpec("toy", "halving", ({"learning_rate": 1.0},), 40, select=False),
        plans.SweepSpec("toy", "cdat", ({"sigma": 2.0},), 40, select=False),  # nobody needs it
    )
    experiments = {"toy": plans.ExperimentSpec("least_squares", (4,), 32, "gd")}
    return plans.Plan(
        "toy", experiments, sweeps, 20, 4, 1, 1, dict.fromkeys(plans.MEASUREMENTS, "")
    )


@contextlib.contextmanager
def _toy_registered(monkeypatch):
    """Register the toy tuner, problem, claim and budget; restore every registry after."""
    monkeypatch.setitem(plans.CATALOGS, "toy", _toy_catalog)
    with tuners.TUNERS.scoped(), problems.PROBLEMS.scoped(), CLAIMS.scoped():
        tuners.TUNERS.register(
            tuners.TunerSpec(
                "halving", "η/2", _halving, {"learning_rate": 1.0}, ("η", "learning_rate", "g")
            )
        )
        problems.PROBLEMS.register(
            problems.ProblemSpec("least_squares", _least_squares, lambda s: f"least squares {s[0]}")
        )
        claim(
            id="T1.toy_descends",
            group="toy",
            statement="η/2 on a least-squares problem halves the loss.",
            criterion="final loss < half the first",
            needs={"run": needs.run("toy", "halving", learning_rate=1.0)},
            budgets=("toy",),
        )(_descends)
        yield
    monkeypatch.delitem(plans.CATALOGS, "toy")


@pytest.fixture
def toy(monkeypatch):
    with _toy_registered(monkeypatch):
        yield


def test_the_plan_of_a_toy_budget_holds_what_the_toy_claim_needs(toy):
    plan = plans.build_plan("toy", CLAIMS.values())
    assert [(s.experiment, s.tuner) for s in plan.sweeps] == [("toy", "halving")]
    assert plan.measurements == {} and list(plan.experiments) == ["toy"]


def test_a_toy_tuner_problem_and_claim_run_end_to_end(toy, tmp_path):
    report = verify.run_verify(plans.build_plan("toy", CLAIMS.values()), tmp_path, progress=False)
    by_id = {c["id"]: c for c in report["claims"]}
    toy_claim = by_id.pop("T1.toy_descends")
    assert toy_claim["status"] == "PASS", toy_claim
    assert toy_claim["source"] == "toy: least squares 4, 32 examples, full batch, GD [halving η=1]"
    assert {c["status"] for c in by_id.values()} == {"N/A"}  # the paper's claims: no data
    run = report["results"]["experiments"]["toy"]["runs"]["halving η=1"]
    np.testing.assert_allclose(run["learning_rate"], 0.5)
    assert run["record_step"] == [20, 40] and all(s > 0 for s in run["sharpness"])
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["PASS"] == 1
    assert report["plots"] and all(p.endswith(".png") for p in report["plots"])


def test_toy_registrations_are_undone(monkeypatch):
    before = [list(r) for r in (tuners.TUNERS, problems.PROBLEMS, CLAIMS, plans.CATALOGS)]
    with _toy_registered(monkeypatch):
        assert "halving" in tuners.TUNERS and "least_squares" in problems.PROBLEMS
        assert list(CLAIMS)[-1] == "T1.toy_descends"
    after = [list(r) for r in (tuners.TUNERS, problems.PROBLEMS, CLAIMS, plans.CATALOGS)]
    assert after == before


def test_unknown_budget_and_measurement_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        verify.run_verify("huge", tmp_path)
    plan = plans.CATALOGS["quick"]()._replace(measurements={"spectrum": ""})
    with pytest.raises(ValueError, match=r"unknown measurements \['spectrum'\]"):
        verify.run_verify(plan, tmp_path)
