"""cdat_core.lab.plots_diagnostics and its place in plot_report."""

from pathlib import Path

from cdat_core.lab import plots


def _run(tuner, sigma=None, *, diagnostics=True):
    run = {
        "tuner": tuner,
        "hyperparams": {} if sigma is None else {"sigma": sigma},
        "step": list(range(60)),
        "loss": [1.0] * 60,
        "learning_rate": [0.1] * 60,
        "grad_norm": [1.0] * 60,
        "record_step": [20, 40, 60],
        "sharpness": [10.0] * 3,
        "eos": [1.0] * 3,
    }
    if diagnostics:
        run |= {
            "update_cosine": [0.0] + [-0.9] * 59,
            "alignment": [0.5, 0.6, None],
            "instant_gap": [0.01, None, 0.02],
        }
    return run


def _report(diagnostics):
    runs = {
        "constant η=0.1": _run("constant", diagnostics=diagnostics),
        "cdat σ=1": _run("cdat", 1.0, diagnostics=diagnostics),
        "cdat σ=2": _run("cdat", 2.0, diagnostics=diagnostics),
    }
    exp = {"description": "toy", "runs": runs, "selected": {"constant": "constant η=0.1"}}
    return {"results": {"experiments": {"gd": exp}}, "plan": {"experiments": {}}}


def test_plot_report_draws_the_update_geometry_when_recorded(tmp_path):
    written = plots.plot_report(_report(True), tmp_path)
    geometry = [p for p in written if p.endswith("gd_fig16_17_updates.png")]
    assert len(geometry) == 1 and Path(geometry[0]).stat().st_size > 1000


def test_no_geometry_plot_without_the_diagnostics(tmp_path):
    written = plots.plot_report(_report(False), tmp_path)
    assert written and not any("fig16_17" in p for p in written)
