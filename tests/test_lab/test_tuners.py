"""cdat_core.lab.tuners: the registry builds what it says, labels its runs, and the C.3
selection rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core.lab import train, tuners

M = jnp.asarray(np.diag([4.0, 1.0, 0.25]), jnp.float32)


def loss(w):
    return 0.5 * w @ (M @ w)


W = jnp.asarray([1.0, -2.0, 3.0], jnp.float32)


def one_update(opt, w=W):
    g = jax.grad(loss)(w)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int32
        state = opt.init(w)
        updates, state = opt.update(g, state, w, value_fn=loss, value=loss(w), grad=g)
    return updates, state


@pytest.mark.parametrize("tuner", list(tuners.TUNERS))
@pytest.mark.parametrize("base", list(tuners.BASES))
def test_every_tuner_on_every_base_takes_a_finite_descent_step(tuner, base):
    required = [k for k, v in tuners.TUNERS[tuner].static.items() if v is None]
    static = dict.fromkeys(required, 10)
    opt = tuners.make(tuner, base, static=static)
    updates, state = one_update(opt)
    eta = float(optax.tree.get(state, "learning_rate"))
    assert math.isfinite(eta)
    assert eta >= 0
    g = jax.grad(loss)(W)
    slope = float(jnp.sum(g * updates))
    if tuner == "warmup_cosine":  # the warm-up starts at 0: no step
        assert eta == 0.0 and slope == 0.0
    else:
        assert eta > 0
        assert slope < 0, "the first update must descend"


def test_cdat_from_the_registry_is_the_core_transformation():
    _, ours = one_update(tuners.make("cdat", sigma=2.0625, ema_decay=0.0))
    _, core = one_update(cc.cdat(optax.sgd(1.0), sigma=2.0625))
    assert float(optax.tree.get(ours, "learning_rate")) == float(
        optax.tree.get(core, "learning_rate")
    )
    # and the number is eq (8): σ gᵀg / gᵀMg with g = M w
    g = np.asarray(M @ W, np.float64)
    expected = 2.0625 * (g @ g) / (g @ np.asarray(M, np.float64) @ g)
    assert float(optax.tree.get(ours, "learning_rate")) == pytest.approx(expected, rel=1e-5)


def test_greedy_is_cdat_with_sigma_one():
    _, greedy = one_update(tuners.make("greedy"))
    _, cdat1 = one_update(tuners.make("cdat", sigma=1.0))
    assert float(optax.tree.get(greedy, "learning_rate")) == float(
        optax.tree.get(cdat1, "learning_rate")
    )


def test_linesearch_numbers_reach_the_search():
    # f = ½ wᵀMw along u = -g: Armijo with c = 0.5 accepts η iff η ≤ 1/(uᵀMu/uᵀu)... check
    # against a direct evaluation of the backtracking sequence 1, 0.5, 0.25, ...
    opt = tuners.make("linesearch", c=0.5, decrease_factor=0.5, increase_factor=math.inf)
    _, state = one_update(opt)
    g = np.asarray(M @ W, np.float64)
    m = np.asarray(M, np.float64)
    f0 = 0.5 * np.asarray(W) @ m @ np.asarray(W)
    eta = 1.0
    while 0.5 * (np.asarray(W) - eta * g) @ m @ (np.asarray(W) - eta * g) > f0 - 0.5 * eta * g @ g:
        eta *= 0.5
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(eta)


def test_warmup_cosine_follows_linear_warmup_then_cosine():
    steps, peak = 20, 0.4
    res = train.sweep(
        lambda w: 0.5 * jnp.sum(w**2),
        jnp.ones(2, jnp.float32),
        tuners.factory("warmup_cosine", num_steps=steps, warmup_fraction=0.25),
        [{"peak_learning_rate": peak}],
        num_steps=steps,
        record_every=10,
        key=jax.random.key(0),
    )[0]
    t = np.arange(steps)
    warm = 5
    expected = np.where(
        t < warm,
        peak * t / warm,
        0.5 * peak * (1 + np.cos(np.pi * (t - warm) / (steps - warm))),
    )
    np.testing.assert_allclose(res.history.learning_rate, expected, rtol=1e-5, atol=1e-7)


def test_factory_is_cached_per_structure():
    assert tuners.factory("cdat", "adam") is tuners.factory("cdat", "adam")
    assert tuners.factory("cdat", "gd") is not tuners.factory("cdat", "adam")
    a = tuners.factory("warmup_cosine", num_steps=10)
    assert a is tuners.factory("warmup_cosine", num_steps=10)
    assert a is not tuners.factory("warmup_cosine", num_steps=20)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: tuners.factory("nope"), "unknown tuner"),
        (lambda: tuners.factory("cdat", "sgd2"), "unknown base"),
        (lambda: tuners.factory("warmup_cosine"), "num_steps"),
        (lambda: tuners.make("cdat", learning_rate=0.1), "no numbers"),
        (lambda: tuners.factory("cdat", num_iters=3), "no settings"),
        (lambda: tuners.make("nope"), "unknown tuner"),
    ],
)
def test_bad_names_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_grid_is_powers_of_two():
    assert tuners.grid(0.3, [-2, 0, 3]) == [0.075, 0.3, 2.4]


def _history(losses):
    n = len(losses)
    zeros = np.zeros(n)
    return train.History(
        np.asarray(losses, float), zeros, zeros, {}, *([np.zeros(0)] * 5), False, 0.0, 0.0
    )


def test_select_best_uses_the_last_five_iterates():
    # run 0 ends lower on its very last iterate, but run 1 is lower on average over 5
    a = _history([9, 9, 9, 9, 9, 9, 5.0, 5.0, 5.0, 5.0, 0.1])
    b = _history([9, 9, 9, 9, 9, 9, 1.0, 1.0, 1.0, 1.0, 1.0])
    c = _history([9] * 11)
    assert tuners.select_best([c, a, b, c]) == (2, True)
    assert tuners.select_best([b, a]) == (0, False)


def test_select_best_never_picks_a_diverged_run():
    good = _history([3.0] * 6)
    bad = _history([0.1] * 5 + [np.nan])
    assert tuners.select_best([bad, good]) == (1, False)
    with pytest.raises(ValueError):
        tuners.select_best([])


def test_labels_name_the_run_by_its_number():
    assert tuners.TUNERS["cdat"].run_label({"sigma": 2.0625, "ema_decay": 0.9}) == "cdat σ=2.0625"
    assert tuners.TUNERS["greedy"].run_label({"sigma": 1.0}) == "cdat σ=1"
    assert tuners.TUNERS["constant"].run_label({"learning_rate": 0.046237}) == "constant η=0.0462"
    assert tuners.TUNERS["polyak"].run_label({"max_learning_rate": 100.0}) == "polyak η_max=100"
    for spec in tuners.TUNERS.values():  # every tuner labels its default run
        assert spec.run_label(spec.defaults).startswith(spec.label_name or spec.name)


def test_specs_are_frozen_and_defaults_read_only():
    spec = tuners.TUNERS["cdat"]
    with pytest.raises(AttributeError):
        spec.name = "other"
    with pytest.raises(TypeError):
        spec.defaults["sigma"] = 3.0
    assert tuners.DEFAULTS["cdat"] == {"sigma": 2.0, "ema_decay": 0.0}
    assert list(tuners.DEFAULTS) == list(tuners.TUNERS)


def test_cdat_designates_its_greedy_and_on_edge_runs():
    assert dict(tuners.TUNERS["cdat"].designates) == {
        "greedy": {"sigma": 1.0},
        "cdat": {"sigma": 2.0},
    }


def test_a_tuner_is_one_registration():
    def halving(hp, static):
        return tuners.scale_by_scheduled_learning_rate(0.5 * hp["learning_rate"])

    toy = tuners.TunerSpec(
        "toy", "η/2", halving, {"learning_rate": 0.5}, ("η", "learning_rate", "g")
    )
    with tuners.TUNERS.scoped():
        tuners.TUNERS.register(toy)
        _, state = one_update(tuners.make("toy", "momentum"))
        assert float(optax.tree.get(state, "learning_rate")) == 0.25
        assert tuners.DEFAULTS["toy"] == {"learning_rate": 0.5}
        with pytest.raises(ValueError, match="already registered"):
            tuners.TUNERS.register(toy)
    assert "toy" not in tuners.TUNERS


def test_a_label_number_must_be_a_default():
    with pytest.raises(ValueError, match="label number"):
        tuners.TunerSpec("bad", "r", lambda hp, s: None, {"a": 1.0}, ("b", "b", "g"))
