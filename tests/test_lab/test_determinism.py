"""The same verdicts on reruns: XLA's CPU threading off, and the lanes sharded over 8 devices.

One reduced quick plan (every claim type of the quick budget: identities, findings 1-3,
models, costs; 2 seeds, 50 steps) is run three times, each in a fresh process: as is, with
XLA's CPU multi-threading disabled, and on 8 simulated CPU devices (the seeds x grid lanes
sharded over them). Verdicts must be identical, except the wall-clock claims, whose figure is
a timing; on 8 devices every run's numbers must match one device's to float tolerance.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cdat_core.lab.claims import CLAIMS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from cdat_core.lab import claims, plans, verify
plan = plans.build_plan("quick", claims.CLAIMS.values())
plan = plan._replace(
    sweeps=tuple(s._replace(num_steps=50) for s in plan.sweeps),
    record_every=25, cost_rounds=1, cost_number=1, seeds=2,
)
verify.run_verify(plan, sys.argv[1], progress=False)
"""
RUNS = {
    "default": "",
    "single_thread": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "eight_devices": "--xla_force_host_platform_device_count=8",
}
#: Claims whose figure is a wall-clock ratio: a timing, not a function of the seed.
WALL_CLOCK = {cid for cid, spec in CLAIMS.items() if "wall" in spec.criterion}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    procs = {}
    for name, flags in RUNS.items():
        out = tmp_path_factory.mktemp(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=flags, CDAT_CORE_NO_COMPILE_CACHE="1")
        procs[name] = (
            out,
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, str(out)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    result = {}
    for name, (out, proc) in procs.items():
        _, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"
        result[name] = json.loads((out / "report.json").read_text())
    return result


def _verdicts(report):
    return {
        c["id"]: (c["status"], c["seeds_held"], c["seeds_total"])
        for c in report["claims"]
        if c["id"] not in WALL_CLOCK
    }


def test_the_runs_used_what_they_were_asked_to(reports):
    assert reports["default"]["environment"]["device_count"] == 1
    assert reports["eight_devices"]["environment"]["device_count"] == 8
    flags = reports["single_thread"]["environment"]["xla_flags"]
    assert "--xla_cpu_multi_thread_eigen=false" in flags
    assert all(r["seeds"] == [0, 1] for r in reports.values())


@pytest.mark.parametrize("other", ["single_thread", "eight_devices"])
def test_verdicts_are_the_same(reports, other):
    base = _verdicts(reports["default"])
    assert {s for s, _, _ in base.values()} - {"N/A"}  # claims were evaluated
    assert _verdicts(reports[other]) == base


def _runs(report):
    for seed, results in report["results"]["per_seed"].items():
        for exp_name, exp in results["experiments"].items():
            for label, run in exp["runs"].items():
                yield (seed, exp_name, label), run


def test_eight_devices_give_the_numbers_of_one(reports):
    one = dict(_runs(reports["default"]))
    eight = dict(_runs(reports["eight_devices"]))
    assert one.keys() == eight.keys() and len(one) >= 2 * 10
    for key, run in one.items():
        other = eight[key]
        for field in ("loss", "learning_rate", "sharpness", "record_loss"):
            a = np.asarray(run[field], float)  # None (non-finite) becomes NaN
            b = np.asarray(other[field], float)
            np.testing.assert_allclose(b, a, rtol=2e-3, atol=1e-6, err_msg=f"{key} {field}")
