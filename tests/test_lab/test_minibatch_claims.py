"""Claims M1-M6 on synthetic mini-batch studies: each can PASS and FAIL, and MIXED over seeds."""

import math

import numpy as np
import pytest
from scipy import stats

from cdat_core.lab.claims import CLAIMS, evaluate_over_seeds, mini_batch
from cdat_core.lab.plots_minibatch import heatmap_values, plot_study

SIZES = [16, 32, 64, 128, 256, 512]
SIGMAS = [0.4, 1.0, 1.6, 2.0, 2.8]
BETAS = [0.0, 0.9, 0.99]


def _run(tuner, end, **extra):
    return {
        "tuner": tuner,
        "hyperparams": extra.pop("hyperparams", {}),
        "end_loss": end,
        "normalized": end,  # the initial loss is 1
        "final_test_error": extra.pop("test_error", 0.1),
        "learning_rate": extra.pop("learning_rate", [0.1] * 10),
        "first_learning_rate": extra.pop("first_learning_rate", [0.1] * 10),
        "train_loss": [end] * 10,
        "test_error": [0.1] * 10,
    }


def _best_at(best_sigma):
    """Performance of CDAT: a valley around ``best_sigma(b, beta)``."""
    return lambda b, s, beta: 0.2 + 0.1 * abs(s - best_sigma(b, beta))


#: CDAT's best σ: 1 below batch size 128, 2 from it (for every β).
GROWING = _best_at(lambda b, beta: 2.0 if b >= 128 else 1.0)


def study(
    perf=GROWING,
    *,
    constant=0.3,
    linesearch=0.5,
    schedule=0.1,
    schedule_error=0.05,
    cdat_rates=(0.01, 0.1),
    probe=(2.0, 1.0),
):
    """A study result with the layout of ``minibatch.run_study`` and chosen numbers."""
    runs, selected = {}, {}
    for b in SIZES:
        group = {
            mini_batch.cdat_label(s, beta): _run(
                "cdat", perf(b, s, beta), hyperparams={"sigma": s, "ema_decay": beta}
            )
            for s in SIGMAS
            for beta in BETAS
        }
        best = min(group, key=lambda k: group[k]["end_loss"])
        first, later = cdat_rates
        group[best] = {
            **group[best],
            "first_learning_rate": [first] + [later] * 9,
            "learning_rate": [later] * 10,
            "final_test_error": 0.1,
        }
        group["constant η=0.1"] = _run("constant", constant)
        group["warmup_cosine peak=0.2"] = _run("warmup_cosine", schedule, test_error=schedule_error)
        group["linesearch c=0.0001"] = _run("linesearch", linesearch)
        runs[str(b)] = group
        selected[str(b)] = {
            "constant": "constant η=0.1",
            "warmup_cosine": "warmup_cosine peak=0.2",
            "linesearch": "linesearch c=0.0001",
            "cdat": best,
        }
    mini, full = probe
    return {
        "description": "synthetic",
        "batch_sizes": SIZES,
        "sigmas": SIGMAS,
        "ema_decays": BETAS,
        "num_epochs": 10,
        "end_epochs": 3,
        "initial_loss": 1.0,
        "initial_test_error": 0.9,
        "runs": runs,
        "selected": selected,
        "probe": {str(b): {"minibatch": [mini] * 4, "full": full, "capped": 0} for b in SIZES},
    }


def _status(cid, data):
    return CLAIMS.lookup(cid).evaluate({"budget": "test", "minibatch": data}).status


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 4, 7).astype(float)
        y = rng.normal(size=7).round(1)
        assert mini_batch.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert math.isnan(mini_batch.spearman([1, 2, 3], [2.0, 2.0, 2.0]))


def test_m1_the_best_sigma_grows_or_not():
    cid = "M1.optimal_sigma_grows_with_batch"
    assert _status(cid, study()) == "PASS"
    shrinking = _best_at(lambda b, beta: 1.0 if b >= 128 else 2.0)
    assert _status(cid, study(shrinking)) == "FAIL"
    flat = _best_at(lambda b, beta: 1.6)
    assert _status(cid, study(flat)) == "FAIL"  # ρ undefined: no trend


def test_m2_greedy_against_on_edge_at_the_smallest_batch():
    cid = "M2.greedy_beats_on_edge_at_small_batch"
    assert _status(cid, study()) == "PASS"
    on_edge = _best_at(lambda b, beta: 2.0)
    assert _status(cid, study(on_edge)) == "FAIL"

    def diverged(b, s, beta):  # σ = 2 diverges: σ = 1 does better
        return math.inf if s == 2.0 else 0.5

    assert _status(cid, study(diverged)) == "PASS"


def test_m3_an_ema_smooths_the_choice_of_sigma():
    cid = "M3.ema_smooths_sigma_choice"

    def smooth_with_ema(b, s, beta):
        if beta == 0.0:  # best σ jumps with the batch size, performance varies
            return 0.2 + 0.1 * abs(s - (0.4 if b < 64 else 2.8)) * (1 + b / 512)
        return 0.2 + 0.1 * abs(s - 1.6)

    assert _status(cid, study(smooth_with_ema)) == "PASS"

    def rough_with_ema(b, s, beta):
        return smooth_with_ema(b, s, 0.0 if beta else 0.9)

    assert _status(cid, study(rough_with_ema)) == "FAIL"


def test_m4_linesearch_or_greedy_on_par_with_the_constant():
    cid = "M4.linesearch_works_in_minibatch"

    def no_greedy(b, s, beta):  # σ = 1 diverges: only the linesearch can hold it
        return math.inf if s == 1.0 else 0.3

    assert _status(cid, study(no_greedy, constant=0.45, linesearch=0.5)) == "PASS"  # 1.11
    assert _status(cid, study(no_greedy, constant=0.3, linesearch=0.5)) == "FAIL"  # 1.67
    # greedy σ=1 β=0 at b < 128 is at 0.2: on par with a constant at 0.17 (ratio 1.18)
    assert _status(cid, study(constant=0.17, linesearch=1.0)) == "PASS"
    assert _status(cid, study(constant=0.1, linesearch=1.0)) == "FAIL"


def test_m5_mini_batch_searches_take_larger_steps():
    cid = "M5.minibatch_linesearch_takes_larger_steps"
    assert _status(cid, study(probe=(0.3, 0.2))) == "PASS"
    assert _status(cid, study(probe=(0.21, 0.2))) == "FAIL"  # 1.05 < 1.1
    assert _status(cid, study(probe=(0.1, 0.2))) == "FAIL"


def test_m6_schedule_beats_cdat_which_still_warms_up():
    cid = "M6.schedule_beats_cdat_in_minibatch"
    assert _status(cid, study()) == "PASS"
    assert _status(cid, study(schedule=0.25)) == "FAIL"  # CDAT's best is at 0.2
    assert _status(cid, study(schedule_error=0.2)) == "FAIL"  # higher test error
    assert _status(cid, study(cdat_rates=(0.1, 0.15))) == "FAIL"  # no 2x rise


def test_k_of_n_seeds_gives_mixed():
    good, bad = study(), study(_best_at(lambda b, beta: 1.0 if b >= 128 else 2.0))
    per_seed = {s: {"budget": "test", "minibatch": d} for s, d in enumerate([good] * 3 + [bad] * 2)}
    verdicts = {v.id: v for v in evaluate_over_seeds(per_seed)}
    m1 = verdicts["M1.optimal_sigma_grows_with_batch"]
    assert (m1.status, m1.seeds_held, m1.seeds_total, m1.figure) == ("MIXED", 3, 5, "rho")
    assert m1.low < 0 < m1.high
    m6 = verdicts["M6.schedule_beats_cdat_in_minibatch"]
    assert (m6.status, m6.seeds_held) == ("PASS", 5)


def test_the_heatmap_averages_seeds_and_caps_at_one(tmp_path):
    a = study(lambda b, s, beta: 0.2)
    b = study(lambda b, s, beta: 0.4 if s < 2.8 else math.inf)
    values = heatmap_values([a, b], 0.9)
    assert values.shape == (len(SIGMAS), len(SIZES))
    np.testing.assert_allclose(values[:-1], 0.3)
    np.testing.assert_allclose(values[-1], 0.6)  # (0.2 + 1) / 2: a diverged run counts as 1
    paths = plot_study([a, b], tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "minibatch_fig7_heatmap.png",
        "minibatch_curves.png",
    ]
    assert all((tmp_path / p.rsplit("/", 1)[-1]).stat().st_size > 10_000 for p in paths)
