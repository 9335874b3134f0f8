"""The cdat-core command line: `verify --quick`, Ctrl-C, `train`, `list`, usage errors."""

import json
import os
import re
import signal
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


def test_quick_writes_a_self_contained_html_report(quick_report):
    out, stdout, report = quick_report
    text = (out / "report.html").read_text("utf-8")
    assert report["partial"] is False and report["html"] == str(out / "report.html")
    assert text.count('src="data:image/png;base64,') == len(report["plots"])
    for c in report["claims"]:
        assert f"<code>{c['id']}</code>" in text
    assert f"{out / 'report.html'}" in stdout


# input -> (message on stderr, one line); the exit status is 2, and nothing is computed
USAGE_ERRORS = {
    "train --tuner cdat --steps -5": "argument --steps: must be >= 1, got -5",
    "train --tuner cdat --record-every 0": "argument --record-every: must be >= 1, got 0",
    "train --tuner cdat --steps 1010": "--steps 1010 is not a multiple of --record-every 50",
    "train --tuner cdat --examples 0": "argument --examples: must be >= 1, got 0",
    "train --tuner cdat --examples 5000": "--examples 5000 exceeds the 1797 examples",
    "train --tuner cdat --batch-size 0": "argument --batch-size: must be >= 1, got 0",
    "train --tuner cdat --batch-size 600": "--batch-size 600 exceeds --examples 512",
    "train --tuner cdat --hidden 12x": "argument --hidden: expected comma-separated positive",
    "train --tuner cdat --hidden 0,4": "argument --hidden: expected comma-separated positive",
    "train --tuner cdat --model cnn --hidden 4,4,4": "--hidden 4,4,4: not a cnn size (channels)",
    "train --tuner constant --sigma 2": "--sigma is not used by the constant tuner",
    "train --tuner greedy --learning-rate 0.1": "--learning-rate is not used by the greedy tuner",
    "train --tuner polyak --ema 0.9": "--ema is not used by the polyak tuner",
    "train --tuner cdat --sigma -1": "argument --sigma: must be > 0, got -1",
    "train --tuner cdat --sigma nan": "argument --sigma: must be > 0, got nan",
    "train --tuner cdat --ema 1": "argument --ema: must be < 1, got 1",
    "train --tuner cdat --seed -1": "argument --seed: must be >= 0, got -1",
    "train --tuner nope": "argument --tuner: invalid choice: 'nope'",
    "train --tuner cdat --base sgd9": "argument --base: invalid choice: 'sgd9'",
    "train --tuner cdat --out {file}/sub": "is a file, not a folder",
    "verify --seeds 0": "argument --seeds: must be >= 1, got 0",
    "verify --cpu-devices 0": "argument --cpu-devices: must be >= 1, got 0",
    "verify --seed x": "argument --seed: expected int, got 'x'",
    "verify --out {file}": "is a file, not a folder",
    "verify --out {report}": "report.json exists (an earlier run's); pass --overwrite",
    "frobnicate": "argument command: invalid choice: 'frobnicate'",
}


@pytest.fixture
def no_computation(monkeypatch):
    """Training, sharpness and the verify job fail the test if they are reached."""
    from cdat_core.lab import train, verify

    def reached(*args, **kwargs):
        raise AssertionError("computation started before the arguments were checked")

    for module, name in ((train, "sweep"), (train, "initial_sharpness"), (verify, "run_verify")):
        monkeypatch.setattr(module, name, reached)


@pytest.mark.parametrize("command", list(USAGE_ERRORS))
def test_usage_errors_are_one_line_and_exit_2(command, tmp_path, capsys, no_computation):
    (tmp_path / "file").write_text("")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "report.json").write_text("{}")
    argv = command.format(file=tmp_path / "file", report=tmp_path / "done").split()
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "runs")]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("cdat-core"), captured.err
    assert USAGE_ERRORS[command] in captured.err
    assert not (tmp_path / "runs").exists()


def test_version_and_help_with_defaults(capsys):
    import cdat_core

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"cdat-core {cdat_core.__version__}\n"
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("training steps (default: 1000)", "(default: 1/λ_0", "(default: gd)"):
        assert default in text
    assert cli.main(["verify", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "output folder (default: cdat-core-report)" in text and "130 on Ctrl-C" in text


def test_list_shows_the_numbers_train_uses(capsys):
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("constant", "linesearch", "cdat", "polyak", "hypergradient", "sharpness", "adam"):
        assert name in text
    assert "problems: mlp, cnn" in text
    assert "  constant: learning_rate=1/λ0 (--learning-rate)  [" in text
    assert "  cdat: sigma=2 (--sigma), ema_decay=0 (--ema)  [CDAT, eq (8)]" in text
    assert (
        "  warmup_cosine: peak_learning_rate=1/λ0 (--learning-rate); fixed num_steps=--steps"
        in text
    )
    assert "  adam: Adam; sharpness preconditioned" in text
    assert "  gd: GD; sharpness Hessian, not preconditioned" in text


TINY = ["--steps", "20", "--record-every", "10", "--hidden", "8", "--examples", "64"]


def test_train_names_its_files_by_what_differs_and_never_overwrites(tmp_path, capsys):
    out = ["--out", str(tmp_path), "--no-progress"]
    assert cli.main(["train", "--tuner", "cdat", "--sigma", "2.0", *TINY, *out]) == 0
    stem = "gd_cdat_sigma=2_ema_decay=0_mlp8_64ex-full_20steps-every10_seed0"
    run = json.loads((tmp_path / f"{stem}.json").read_text())
    assert run["label"] == "gd cdat σ=2" and run["hyperparams"]["sigma"] == 2.0
    assert run["num_steps"] == 20 and run["record_step"] == [10, 20]
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
    text = capsys.readouterr().out
    assert "initial sharpness λ_0" in text and "(Hessian, not preconditioned); final loss" in text
    # the same arguments again: refused before any work, the file untouched
    before = (tmp_path / f"{stem}.json").stat().st_mtime_ns
    assert cli.main(["train", "--tuner", "cdat", *TINY, *out]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / f"{stem}.json").stat().st_mtime_ns == before
    # another σ, another file; --overwrite replaces
    assert cli.main(["train", "--tuner", "cdat", "--sigma", "1.5", *TINY, *out]) == 0
    assert (tmp_path / (stem.replace("sigma=2", "sigma=1.5") + ".json")).exists()
    assert cli.main(["train", "--tuner", "cdat", *TINY, *out, "--overwrite"]) == 0
    assert (tmp_path / f"{stem}.json").stat().st_mtime_ns != before


def test_train_learning_rates_default_to_one_over_the_initial_sharpness(tmp_path, capsys):
    out = ["--out", str(tmp_path), "--no-progress"]
    assert cli.main(["train", "--tuner", "constant", *TINY, *out]) == 0
    (path,) = tmp_path.glob("gd_constant_learning_rate=inv-lambda0_*.json")
    run = json.loads(path.read_text())
    printed = float(capsys.readouterr().out.split("initial sharpness λ_0 ")[1].split()[0])
    np.testing.assert_allclose(run["lambda0"], printed, rtol=1e-3)
    assert run["hyperparams"]["learning_rate"] == 1 / run["lambda0"]
    np.testing.assert_allclose(run["learning_rate"], 1 / run["lambda0"], rtol=1e-6)


def test_adam_runs_say_their_sharpness_is_preconditioned(tmp_path, capsys):
    import jax

    argv = ["train", "--tuner", "cdat", "--base", "adam", "--ema", "0.9", *TINY]
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int32
        assert cli.main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "λ_0" in text.split("(Hessian, not preconditioned)")[0]
    assert "last λ_max" in text and text.split("last λ_max")[1].count("(preconditioned") == 1
    (path,) = tmp_path.glob("adam_cdat_sigma=2_ema_decay=0.9_*.json")
    run = json.loads(path.read_text())
    assert run["preconditioned"] is True and run["sharpness_kind"].startswith("preconditioned")


_INTERRUPT_SCRIPT = """
import sys
from cdat_core.lab import cli, plans, verify
mlp = plans.ExperimentSpec("mlp", (4,), 32, "gd")
sweeps = (plans.SweepSpec("a", "constant", ({"learning_rate": 1.0},), 20, select=False),
          plans.SweepSpec("a", "cdat", ({"sigma": 2.0},), 10**6, select=False))
verify.PLANS["quick"] = lambda: plans.Plan("quick", {"a": mlp}, sweeps, 10, 4, 1, 1, {}, 1)
sys.exit(cli.main(["verify", "--quick", "--out", sys.argv[1], "--no-compile-cache"]))
"""


def _as_from_a_terminal():
    # A shell starts a command with SIGINT unblocked and at its default action. A child
    # inherits its parent's signal mask and ignored signals: in two full CI runs (pytest -n 2)
    # the child here ignored SIGINT for 300 s, while run alone it stops within 5 s at any
    # moment of the sweep; so the child starts as a terminal would start it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_verify_keeps_the_finished_stages_and_exits_130(tmp_path):
    """SIGINT after the first sweep's line: exit 130, a message, the partial report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPT_SCRIPT, str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    lines = []
    try:
        for line in proc.stderr:  # not a terminal: plain lines
            lines.append(line)
            if "sweep 1/2" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(lines) + rest
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[ *\d+%\] "
    assert re.match(stamp + r"stage 2/4 a: constant \(sweep 1/2, 1 seeds x 1 runs", lines[-1])
    assert "Traceback" not in rest
    assert "interrupted: 2/4 stages finished; their results are in" in rest
    partial = json.loads((tmp_path / "report.json").read_text())
    assert partial["partial"] and partial["interrupted"]
    assert partial["stages_done"] == ["building problems", "a: constant"]
    runs = partial["results"]["per_seed"]["0"]["experiments"]["a"]["runs"]
    assert list(runs) == ["constant η=1"] and len(runs["constant η=1"]["loss"]) == 20


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


def test_cpu_devices_rejects_zero_and_running_backends():
    with pytest.raises(ValueError, match="--cpu-devices must be >= 1, got 0"):
        cli.cpu_devices(0)
    import jax

    jax.devices()  # backends are up in this process: the devices stay as they are
    assert cli.cpu_devices(4) is None
    assert jax.device_count() == len(jax.devices())
