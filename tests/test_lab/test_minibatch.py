"""cdat_core.lab.minibatch: the study's kernels against plain optax loops, data order, verify.

The kernels are checked lane by lane against loops written here with optax and cdat_core's
transforms only (no lab code); the data order and the study's results are checked to be the
same on reruns; the quick plan carries the study as a stage of ``cdat-core verify``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core.lab import claims, compile_cache, minibatch, plans, verify
from cdat_core.lab import minibatch_kernels as mk
from cdat_core.testing import MLP

NUM_TRAIN, EPOCHS, BATCH = 32, 3, 8
TINY = minibatch.Study(
    batch_sizes=(8, 16),
    sigmas=(1.0, 2.0),
    ema_decays=(0.0, 0.9),
    num_epochs=EPOCHS,
    hidden=(4,),
    num_train=NUM_TRAIN,
    constant_exponents=(-1, 0, 1),
    schedule_exponents=(0,),
    linesearch_c=(1e-4,),
    end_epochs=2,
    probe_batches=2,
    probe_max_steps=40,
)


@pytest.fixture(scope="module")
def data():
    return minibatch.digits_split(NUM_TRAIN)


def _program(kind, numbers, seeds, data):
    """Run ``train_program`` with one lane per (seed, numbers) pair."""
    lanes = [(s, n) for s in seeds for n in numbers]
    params = [minibatch.initial_params((4,), seed=s) for s, _ in lanes]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
    hp = {k: jnp.asarray([n[k] for _, n in lanes], jnp.float32) for k in mk.KINDS[kind]}
    orders = np.stack([minibatch.data_order(s, EPOCHS, NUM_TRAIN, BATCH) for s in seeds])
    index = jnp.asarray([seeds.index(s) for s, _ in lanes], jnp.int32)
    program = mk.train_program(kind, BATCH, EPOCHS, NUM_TRAIN)
    return lanes, program(stacked, hp, index, jnp.asarray(orders, jnp.int32), data)


def _optax_loop(optimizer, seed, data, *, extra):
    """SGD with ``optimizer`` over the seed's data order; per-epoch train loss and first η."""
    x, y = data[0], data[1]

    @jax.jit
    def step(w, state, idx):
        def fun(p):
            return MLP.loss(p, x[idx], y[idx])

        value, grad = jax.value_and_grad(fun)(w)
        kw = {"value_fn": fun, "value": value, "grad": grad} if extra else {}
        updates, state = optimizer.update(grad, state, w, **kw)
        rate = optax.tree.get(state, "learning_rate") if extra else jnp.zeros(())
        return optax.apply_updates(w, updates), state, rate

    w = minibatch.initial_params((4,), seed=seed)
    state = optimizer.init(w)
    losses, first_rates = [], []
    for epoch in minibatch.data_order(seed, EPOCHS, NUM_TRAIN, BATCH):
        for k, idx in enumerate(epoch):
            w, state, rate = step(w, state, jnp.asarray(idx))
            if k == 0:
                first_rates.append(float(rate))
        losses.append(float(MLP.loss(w, x, y)))
    return w, np.asarray(losses), np.asarray(first_rates)


def _close(a, b, rtol=2e-4):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=1e-6)


def test_a_constant_lane_is_optax_sgd_with_momentum(data):
    etas = [0.05, 0.2]
    numbers = [{"peak_learning_rate": e, "decay": 0.0} for e in etas]
    lanes, (final, records) = _program("schedule", numbers, [0, 1], data)
    for i, (seed, n) in enumerate(lanes):
        opt = optax.sgd(n["peak_learning_rate"], momentum=0.9)
        w, losses, _ = _optax_loop(opt, seed, data, extra=False)
        _close(records["train_loss"][i], losses)
        _close(final[0]["w"][i], w[0]["w"], rtol=1e-3)
        _close(records["learning_rate"][i], n["peak_learning_rate"])


def test_a_warmup_cosine_lane_is_optax_schedule(data):
    total = EPOCHS * NUM_TRAIN // BATCH
    _lanes, (_final, records) = _program(
        "schedule", [{"peak_learning_rate": 0.3, "decay": 1.0}], [2], data
    )
    shape = optax.warmup_cosine_decay_schedule(0.0, 0.3, round(0.1 * total), total)

    def schedule(count):  # a float count: optax mixes it with floats (strict promotion)
        return shape(jnp.asarray(count, jnp.float32))

    _w, losses, _ = _optax_loop(optax.sgd(schedule, momentum=0.9), 2, data, extra=False)
    _close(records["train_loss"][0], losses)
    steps = NUM_TRAIN // BATCH
    _close(records["first_learning_rate"][0], [schedule(e * steps) for e in range(EPOCHS)])


def test_a_cdat_lane_is_the_transform_on_the_mini_batch(data):
    numbers = [{"sigma": 1.5, "ema_decay": 0.9}, {"sigma": 2.0, "ema_decay": 0.0}]
    lanes, (_final, records) = _program("cdat", numbers, [0, 3], data)
    for i, (seed, n) in enumerate(lanes):
        opt = cc.cdat(optax.sgd(1.0, momentum=0.9), n["sigma"], ema_decay=n["ema_decay"])
        _w, losses, first = _optax_loop(opt, seed, data, extra=True)
        _close(records["train_loss"][i], losses, rtol=1e-3)
        _close(records["first_learning_rate"][i], first, rtol=1e-3)


def test_cdat_measures_n_and_d_on_the_mini_batch_not_the_training_split(data):
    (_, (_, records)) = _program("cdat", [{"sigma": 1.0, "ema_decay": 0.0}], [0], data)
    x, y = data[0], data[1]
    w = minibatch.initial_params((4,), seed=0)
    idx = minibatch.data_order(0, 1, NUM_TRAIN, BATCH)[0, 0]

    def greedy(inputs, targets):
        grad = jax.grad(MLP.loss)(w, inputs, targets)
        u = jax.tree.map(jnp.negative, grad)  # the momentum trace at step 0 is the gradient
        c = cc.directional_curvature(lambda p: MLP.loss(p, inputs, targets), w, u)
        return float(-c.slope / c.curvature)

    on_batch, on_split = greedy(x[idx], y[idx]), greedy(x, y)
    assert abs(on_batch - on_split) > 1e-3 * on_split  # the two differ: the test can tell
    _close(records["first_learning_rate"][0, 0], on_batch, rtol=1e-4)


def test_a_linesearch_lane_is_the_transform(data):
    _lanes, (_final, records) = _program("linesearch", [{"c": 0.5}], [1], data)
    opt = optax.chain(
        optax.sgd(1.0, momentum=0.9),
        cc.scale_by_linesearch(c=0.5, decrease_factor=0.8, increase_factor=4.0),
    )
    _w, losses, first = _optax_loop(opt, 1, data, extra=True)
    _close(records["train_loss"][0], losses, rtol=1e-3)
    _close(records["first_learning_rate"][0], first, rtol=1e-3)


def test_the_data_order_is_a_permutation_per_epoch_fixed_by_the_seed():
    a = minibatch.data_order(5, 4, 30, 8)
    assert a.shape == (4, 3, 8)  # 30 // 8 = 3 steps, a remainder of 6 dropped
    for epoch in a:
        assert len(set(epoch.ravel().tolist())) == 24
    np.testing.assert_array_equal(a, minibatch.data_order(5, 4, 30, 8))
    assert not np.array_equal(a, minibatch.data_order(6, 4, 30, 8))
    assert not np.array_equal(a[0], a[1])  # epochs reshuffle
    # every batch size cuts the same permutations
    np.testing.assert_array_equal(minibatch.data_order(5, 4, 30, 4)[:, :6].reshape(4, 3, 8), a)
    with pytest.raises(ValueError, match="batch_size 40 exceeds num_train 30"):
        minibatch.data_order(5, 1, 30, 40)


def test_the_split_is_fixed_and_disjoint():
    tx, _ty, vx, _vy = minibatch.digits_split(1000)
    assert tx.shape == (1000, 64) and vx.shape == (797, 64)
    again = minibatch.digits_split(1000)
    np.testing.assert_array_equal(np.asarray(tx), np.asarray(again[0]))
    train = {tuple(r) for r in np.asarray(tx).round(4).tolist()}
    test = [tuple(r) for r in np.asarray(vx).round(4).tolist()]
    assert sum(r in train for r in test) < 0.1 * len(test)  # digits holds a few duplicates
    with pytest.raises(ValueError, match="num_train must be in"):
        minibatch.digits_split(1797)


@pytest.fixture(scope="module")
def study_runs():
    first = minibatch.run_study(TINY, [0, 1])
    before = compile_cache.counts()["programs"]
    second = minibatch.run_study(TINY, [0, 1])
    return first, second, compile_cache.counts()["programs"] - before


def test_the_study_is_the_same_on_a_rerun_and_selects_the_best_end_loss(study_runs):
    first, second, compiled = study_runs
    assert first == second
    assert compiled == 0  # every program of the study compiles once per process
    for seed_out in first:
        assert seed_out["batch_sizes"] == [8, 16]
        for b in ("8", "16"):
            runs = seed_out["runs"][b]
            assert len(runs) == 4 + 3 + 1 + 1  # cdat σ x β, constant, schedule, linesearch
            for tuner, label in seed_out["selected"][b].items():
                same = [r["end_loss"] for r in runs.values() if r["tuner"] == tuner]
                assert runs[label]["end_loss"] == min(same)
            run = runs["cdat σ=1 β=0"]
            assert len(run["train_loss"]) == EPOCHS
            assert run["end_loss"] == pytest.approx(np.mean(run["train_loss"][-2:]))
            assert run["normalized"] == pytest.approx(run["end_loss"] / seed_out["initial_loss"])
            probe = seed_out["probe"][b]
            assert len(probe["minibatch"]) == 2 and probe["full"] > 0
    # the seeds differ (initial weights and data order)
    assert first[0]["initial_loss"] != first[1]["initial_loss"]


def test_the_probe_is_the_linesearch_at_the_selected_constants_iterate(study_runs):
    """Rerun the selected constant lane and search on the training split by hand."""
    seed_out = study_runs[0][0]
    label = seed_out["selected"]["8"]["constant"]
    eta = seed_out["runs"]["8"][label]["hyperparams"]["peak_learning_rate"]
    data = minibatch.digits_split(NUM_TRAIN)
    w, _, _ = _optax_loop(optax.sgd(eta, momentum=0.9), 0, data, extra=False)
    fun = lambda p: MLP.loss(p, data[0], data[1])  # noqa: E731
    value, grad = jax.value_and_grad(fun)(w)
    result = cc.backtracking_linesearch(
        fun,
        w,
        jax.tree.map(jnp.negative, grad),
        value=value,
        slope=-sum(jnp.sum(g * g) for g in jax.tree.leaves(grad)),
        initial_learning_rate=TINY.probe_initial_learning_rate,
        c=1e-4,
        decrease_factor=0.8,
        max_steps=TINY.probe_max_steps,
    )
    assert seed_out["probe"]["8"]["full"] == pytest.approx(float(result.learning_rate), rel=1e-3)


def test_bad_studies_raise_naming_the_setting():
    with pytest.raises(ValueError, match="sigmas must hold 1 and 2"):
        minibatch.run_study(TINY._replace(sigmas=(0.5, 2.0)), [0])
    with pytest.raises(ValueError, match="batch_sizes must increase"):
        minibatch.run_study(TINY._replace(batch_sizes=(16, 8)), [0])
    with pytest.raises(ValueError, match="exceed num_train"):
        minibatch.run_study(TINY._replace(batch_sizes=(8, 64)), [0])
    with pytest.raises(ValueError, match="end_epochs"):
        minibatch.run_study(TINY._replace(end_epochs=4), [0])
    with pytest.raises(ValueError, match="unknown kind 'adam'"):
        mk.make_optimizer("adam", {}, num_steps=1)


def test_the_quick_and_full_plans_run_the_study_and_its_claims():
    for budget, sizes in (("quick", 3), ("full", 5)):
        plan = verify.PLANS[budget]()
        assert plan.measurements["minibatch"] == ""
        assert plan.minibatch is minibatch.STUDIES[budget]
        assert len(plan.minibatch.batch_sizes) >= sizes
    full = minibatch.STUDIES["full"]
    assert min(full.batch_sizes) <= 16 and max(full.batch_sizes) >= 512
    assert len(full.sigmas) >= 6 and min(full.sigmas) <= 0.4 and max(full.sigmas) >= 2.8
    assert full.ema_decays == (0.0, 0.9, 0.99) and verify.PLANS["full"]().seeds >= 3
    ids = [c for c in claims.CLAIMS if c.startswith("M")]
    assert ids == [
        "M1.optimal_sigma_grows_with_batch",
        "M2.greedy_beats_on_edge_at_small_batch",
        "M3.ema_smooths_sigma_choice",
        "M4.linesearch_works_in_minibatch",
        "M5.minibatch_linesearch_takes_larger_steps",
        "M6.schedule_beats_cdat_in_minibatch",
    ]
    assert all("quick" in claims.CLAIMS.lookup(c).budgets for c in ids)


def test_verify_runs_the_study_as_a_stage_and_evaluates_every_seed(tmp_path):
    plan = plans.Plan("test", {}, (), 10, 4, 1, 1, {"minibatch": ""}, seeds=2, minibatch=TINY)
    report = verify.run_verify(plan, tmp_path, seed=4, progress=False)
    assert report["stages"] == ["building problems", "minibatch study", "claims, plots and report"]
    assert report["plan"]["minibatch"]["batch_sizes"] == [8, 16]
    expected = minibatch.run_study(TINY, [4, 5])
    for seed, want in zip((4, 5), expected, strict=True):
        got = verify.seed_results(report["results"], seed)["minibatch"]
        assert got["runs"]["16"]["cdat σ=2 β=0.9"]["train_loss"] == pytest.approx(
            want["runs"]["16"]["cdat σ=2 β=0.9"]["train_loss"]
        )
    by_id = {c["id"]: c for c in report["claims"]}
    for cid in ("M1.optimal_sigma_grows_with_batch", "M5.minibatch_linesearch_takes_larger_steps"):
        assert by_id[cid]["seeds_total"] == 2 and by_id[cid]["status"] != "N/A"
    names = [p.rsplit("/", 1)[-1] for p in report["plots"]]
    assert names == ["minibatch_fig7_heatmap.png", "minibatch_curves.png"]
    assert report["seconds"]["minibatch"] > 0
