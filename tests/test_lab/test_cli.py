"""The cdat-core command line: `verify --quick` end to end, `train`, `list`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cdat_core.lab import claims, cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdat_core",
            "verify",
            "--quick",
            "--out",
            str(out),
            "--no-progress",
            "--no-compile-cache",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, json.loads((out / "report.json").read_text())


def test_quick_report_structure(quick_report):
    _, _, report = quick_report
    assert report["budget"] == "quick"
    assert {"environment", "plan", "results", "claims", "summary", "plots", "seconds"} <= set(
        report
    )
    assert report["environment"]["backend"] == "cpu"
    assert report["seeds"] == [0, 1]  # the quick budget's 2 seeds
    assert report["environment"]["device_count"] >= 1 and "jaxlib" in report["environment"]
    assert report["compile"]["cache_dir"] is None  # --no-compile-cache
    fields = set(claims.Verdict._fields)
    assert report["claims"]
    for c in report["claims"]:
        assert set(c) == fields
        assert c["status"] in claims.STATUSES
        assert (c["status"] == "N/A") == (c["seeds_total"] == 0)
        assert 0 <= c["seeds_held"] <= c["seeds_total"] <= 2
        assert c["statement"] and c["criterion"] and c["measured"] and c["source"]
        evaluated = [o for o in c["per_seed"] if o["status"] != "N/A"]
        assert len(evaluated) == c["seeds_total"]
        assert sum(o["status"] == "PASS" for o in evaluated) == c["seeds_held"]
    counts = {s: sum(c["status"] == s for c in report["claims"]) for s in claims.STATUSES}
    assert counts == report["summary"]
    # every claim type is evaluated even at the quick budget
    evaluated = {c["group"] for c in report["claims"] if c["status"] != "N/A"}
    assert {"identity", "finding 1", "finding 2", "finding 3", "model", "cost"} <= evaluated
    # exactly the claims declared full-budget only are not evaluated
    not_evaluated = {c["id"] for c in report["claims"] if c["status"] == "N/A"}
    assert not_evaluated == {i for i, spec in claims.CLAIMS.items() if "quick" not in spec.budgets}
    assert [c["id"] for c in report["claims"]] == list(claims.CLAIMS)
    # the runs behind the claims are in the report, with their per-step series
    for seed in report["seeds"]:
        gd = report["results"]["per_seed"][str(seed)]["experiments"]["gd"]
        assert {"constant", "linesearch", "greedy", "cdat"} <= set(gd["selected"])
        run = gd["runs"][gd["selected"]["cdat"]]
        assert len(run["step"]) == len(run["loss"]) == len(run["learning_rate"])
        assert len(run["record_step"]) == len(run["sharpness"]) == len(run["eos"])
    assert report["seconds"]["total"] > 0


def test_quick_writes_png_plots(quick_report):
    out, _, report = quick_report
    pngs = sorted((out / "plots").glob("*.png"))
    assert pngs
    assert {p.name for p in pngs} >= {
        "gd_fig3_classical.png",
        "gd_fig6_cdat.png",
        "models_fig4.png",
    }
    assert sorted(str(p) for p in pngs) == sorted(report["plots"])
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_quick_prints_the_claims_table(quick_report):
    _, stdout, report = quick_report
    for c in report["claims"]:
        assert f"{c['status']:<5} {c['id']}" in stdout
    s = report["summary"]
    assert f"{s['PASS']} PASS, {s['MIXED']} MIXED, {s['FAIL']} FAIL, {s['N/A']} N/A" in stdout
    assert "seeds [0, 1]" in stdout and "persistent cache off" in stdout


def test_verify_rejects_a_seed_count_below_one(capsys):
    assert cli.main(["verify", "--quick", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err


def test_list_names_tuners_and_bases(capsys):
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("constant", "linesearch", "cdat", "polyak", "hypergradient", "sharpness", "adam"):
        assert name in text
    assert "problems: mlp, cnn" in text
    assert "  cdat: sigma=2, ema_decay=0  (CDAT, eq (8))" in text


def test_train_writes_its_run_and_plot(tmp_path, capsys):
    code = cli.main(
        [
            "train", "--tuner", "cdat", "--sigma", "2.0", "--steps", "20",
            "--record-every", "10", "--hidden", "8", "--examples", "64",
            "--out", str(tmp_path), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "gd_cdat.json").read_text())
    assert run["label"] == "cdat σ=2"
    assert run["hyperparams"]["sigma"] == 2.0
    assert run["num_steps"] == 20 and run["record_step"] == [10, 20]
    assert (tmp_path / "gd_cdat.png").read_bytes()[:8] == PNG_MAGIC
    assert "final loss" in capsys.readouterr().out


def test_train_rejects_unknown_names(tmp_path, capsys):
    assert cli.main(["train", "--tuner", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown tuner" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--tuner", "cdat", "--base", "sgd9"])
    assert info.value.code == 2


_DEVICES_SCRIPT = """
import sys
from cdat_core.lab import cli
requested = None if sys.argv[1] == "default" else int(sys.argv[1])
got = cli.cpu_devices(requested)
import jax, jax.numpy as jnp
from cdat_core.lab import train, tuners
loss = lambda w, a: 0.5 * jnp.sum(a * w**2)
a = jnp.array([5.0, 2.0, 0.5])
runs = train.run_lanes(loss, [jnp.ones(3)] * 3, tuners.factory("sharpness"),
                       [{"sigma": s} for s in (1.0, 2.0, 3.0)], [jax.random.key(0)] * 3,
                       num_steps=4, data=(a,), record_every=2, vectorize=False)
print(got, jax.device_count(), [round(float(r.params[0]), 6) for r in runs])
"""


def _devices(arg, xla_flags=""):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
    out = subprocess.run(
        [sys.executable, "-c", _DEVICES_SCRIPT, arg],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got, count, *params = out.stdout.split(maxsplit=2)
    return got, int(count), json.loads(params[0])


def test_cpu_devices_splits_the_host_and_the_lanes_run_on_them():
    got, count, params = _devices("3")
    assert (got, count) == ("3", 3)
    # η = σ/λ_max on the quadratic (λ_max = 5): w0 = 1 -> (1 - 5σ/5)^4 = (1 - σ)^4
    np.testing.assert_allclose(params, [0.0, 1.0, 16.0], atol=1e-5)
    # the default: the usable cores, at most MAX_CPU_DEVICES
    got, count, _ = _devices("default")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert int(got) == count == min(usable, cli.MAX_CPU_DEVICES)


def test_cpu_devices_leaves_an_explicit_xla_flag_alone():
    got, count, _ = _devices("3", "--xla_force_host_platform_device_count=2")
    assert (got, count) == ("None", 2)


def test_cpu_devices_rejects_zero_and_running_backends(capsys):
    assert cli.main(["verify", "--quick", "--cpu-devices", "0"]) == 2
    assert "--cpu-devices must be >= 1, got 0" in capsys.readouterr().err
    import jax

    jax.devices()  # backends are up in this process: the devices stay as they are
    assert cli.cpu_devices(4) is None
    assert jax.device_count() == len(jax.devices())
