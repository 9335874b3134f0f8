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
    plan = plans.build_plan("toy", CLAIMS.values())
    report = verify.run_verify(plan, tmp_path, seed=3, seeds=3, progress=False)
    by_id = {c["id"]: c for c in report["claims"]}
    toy_claim = by_id.pop("T1.toy_descends")
    assert toy_claim["status"] == "PASS", toy_claim
    assert (toy_claim["seeds_held"], toy_claim["seeds_total"]) == (3, 3)
    assert [o["seed"] for o in toy_claim["per_seed"]] == [3, 4, 5]
    assert toy_claim["source"] == "toy: least squares 4, 32 examples, full batch, GD [halving η=1]"
    assert {c["status"] for c in by_id.values()} == {"N/A"}  # the paper's claims: no data
    assert report["seeds"] == [3, 4, 5] and report["verdict_rule"].startswith("each claim")
    first_losses = []
    for seed in report["seeds"]:
        results = verify.seed_results(report["results"], seed)
        run = results["experiments"]["toy"]["runs"]["halving η=1"]
        np.testing.assert_allclose(run["learning_rate"], 0.5)
        assert run["record_step"] == [20, 40] and all(s > 0 for s in run["sharpness"])
        # each seed starts from its own weights: w0 drawn with that seed
        w0 = _least_squares((4,), num_examples=32, seed=seed)
        expected = float(LeastSquares.loss(w0.params, w0.inputs, w0.targets))
        np.testing.assert_allclose(run["loss"][0], expected, rtol=1e-5)
        first_losses.append(run["loss"][0])
    assert len(set(first_losses)) == 3
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["summary"]["PASS"] == 1
    env = written["environment"]
    assert {"jax", "jaxlib", "cpu", "device_count", "xla_flags"} <= set(env)
    assert written["compile"]["programs"] >= 1
    assert report["plots"] and all(p.endswith(".png") for p in report["plots"])


def test_an_experiment_key_does_not_depend_on_the_others(toy, tmp_path):
    """Keys are folded with the experiment's name: adding an experiment changes no number."""
    plan = plans.build_plan("toy", CLAIMS.values())
    alone = verify.run_verify(plan, tmp_path / "a", seeds=1, progress=False)
    other = plans.ExperimentSpec("least_squares", (4,), 16, "gd")
    wider = plan._replace(experiments={"before": other, **plan.experiments})
    both = verify.run_verify(wider, tmp_path / "b", seeds=1, progress=False)
    runs = [
        verify.seed_results(r["results"], 0)["experiments"]["toy"]["runs"]["halving η=1"]
        for r in (alone, both)
    ]
    assert runs[0]["sharpness"] == runs[1]["sharpness"]
    assert runs[0]["loss"] == runs[1]["loss"]


def test_seeds_must_be_positive(toy, tmp_path):
    with pytest.raises(ValueError, match="seeds must be >= 1, got 0"):
        verify.run_verify(plans.build_plan("toy", CLAIMS.values()), tmp_path, seeds=0)


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


def test_ctrl_c_keeps_the_finished_stages_in_a_partial_report(toy, tmp_path, monkeypatch):
    """The second sweep is interrupted: report.json holds the first, marked partial."""
    plan = plans.build_plan("toy", CLAIMS.values())
    second = plans.SweepSpec("toy", "cdat", ({"sigma": 2.0},), 40, select=False)
    plan = plan._replace(sweeps=(*plan.sweeps, second))
    run_sweep = verify.runner.run_sweep

    def interrupted_at_cdat(plan, sweep, *args):
        if sweep.tuner == "cdat":
            raise KeyboardInterrupt
        return run_sweep(plan, sweep, *args)

    monkeypatch.setattr(verify.runner, "run_sweep", interrupted_at_cdat)
    with pytest.raises(verify.Interrupted) as info:
        verify.run_verify(plan, tmp_path, seeds=2, progress=False)
    assert isinstance(info.value, KeyboardInterrupt)
    assert (info.value.stages_done, info.value.stages_total) == (2, 4)
    partial = json.loads((tmp_path / "report.json").read_text())
    assert partial["partial"] is True and partial["interrupted"] is True
    assert partial["stages_done"] == ["building problems", "toy: halving"]
    assert partial["stages"][2:] == ["toy: cdat", "claims, plots and report"]
    for seed in ("0", "1"):
        runs = partial["results"]["per_seed"][seed]["experiments"]["toy"]["runs"]
        assert list(runs) == ["halving η=1"]
        np.testing.assert_allclose(runs["halving η=1"]["learning_rate"], 0.5)
    assert "claims" not in partial and not (tmp_path / "report.html").exists()


def test_report_json_is_rewritten_after_every_stage(toy, tmp_path, monkeypatch):
    plan = plans.build_plan("toy", CLAIMS.values())
    seen = []
    write_json = verify.report_lib.write_json

    def spy(path, data, **kw):
        seen.append((data["partial"], list(data.get("stages_done", []))))
        return write_json(path, data, **kw)

    monkeypatch.setattr(verify.report_lib, "write_json", spy)
    verify.run_verify(plan, tmp_path, seeds=1, progress=False)
    assert seen == [
        (True, ["building problems"]),
        (True, ["building problems", "toy: halving"]),
        (False, []),
    ]


def test_progress_lines_are_timestamped_and_come_within_a_long_stage():
    import io
    import re
    import time

    from cdat_core.lab import runner

    out = io.StringIO()
    with runner.Progress(1000, lines=True, bar=False, stream=out, interval=0.01) as progress:
        progress.stage("stage 2/5 gd: cdat")
        progress.update(250)
        deadline = time.monotonic() + 30.0
        while "250/1,000" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)  # no update: the line thread reports on its own
        progress.finished("stage 2/5 gd: cdat (sweep 1/3)", 3.0)
    lines = out.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[ *\d+%\] "
    assert all(re.match(stamp, line) for line in lines), lines
    assert re.match(stamp + r"stage 2/5 gd: cdat started", lines[0])
    beat = next(line for line in lines if "250/1,000" in line)
    assert re.search(r"\[ 25%\] stage 2/5 gd: cdat: 250/1,000 lane-steps; elapsed .*, ETA ", beat)
    assert re.search(r"sweep 1/3\) in 3 s; elapsed .*, ETA ", lines[-1])
    silent = io.StringIO()
    with runner.Progress(10, lines=False, bar=False, stream=silent, interval=0.01) as quiet:
        quiet.stage("x")
        quiet.finished("x", 1.0)
    assert silent.getvalue() == ""
