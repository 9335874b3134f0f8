"""cdat_core.lab.train: records checked against closed forms on quadratics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cdat_core.lab import train, tuners

A = np.array([5.0, 2.0, 0.5])  # Hessian diagonal of the quadratic below


def quad(w, a):
    return 0.5 * jnp.sum(a * w**2)


DATA = (jnp.asarray(A, jnp.float32),)
W0 = jnp.ones(3, jnp.float32)


def constant(eta):
    return optax.chain(optax.sgd(1.0), tuners.scale_by_scheduled_learning_rate(eta))


def test_gradient_descent_records_match_the_closed_form():
    eta, steps = 0.3, 12
    res = train.train(
        quad, W0, constant(eta), data=DATA, num_steps=steps, record_every=4, key=jax.random.key(0)
    )
    h = res.history
    t = np.arange(steps)[:, None]
    w = (1 - eta * A[None, :]) ** t  # w_t = (1 - ηa)^t w_0, elementwise
    np.testing.assert_allclose(h.loss, 0.5 * np.sum(A * w**2, axis=1), rtol=1e-5)
    np.testing.assert_allclose(h.grad_norm, np.linalg.norm(A * w, axis=1), rtol=1e-5)
    np.testing.assert_allclose(h.learning_rate, eta, rtol=1e-6)
    np.testing.assert_array_equal(h.record_step, [4, 8, 12])
    np.testing.assert_allclose(h.sharpness, A.max(), rtol=1e-4)
    np.testing.assert_allclose(h.eos, eta * A.max(), rtol=1e-4)
    np.testing.assert_allclose(h.initial_sharpness, A.max(), rtol=1e-4)
    w_end = (1 - eta * A) ** steps
    np.testing.assert_allclose(h.record_loss[-1], 0.5 * np.sum(A * w_end**2), rtol=1e-5)
    np.testing.assert_allclose(res.params, w_end, rtol=1e-5)
    assert not h.preconditioned


def test_num_steps_round_up_to_whole_chunks():
    res = train.train(
        quad, W0, constant(0.1), data=DATA, num_steps=10, record_every=4, key=jax.random.key(0)
    )
    assert res.history.loss.shape == (12,)
    np.testing.assert_array_equal(res.history.record_step, [4, 8, 12])


def test_sweep_lanes_equal_separate_runs_and_sequential_mode():
    make = tuners.factory("constant")
    hps = [{"learning_rate": 0.1}, {"learning_rate": 0.35}]
    kw = dict(data=DATA, num_steps=6, record_every=3, key=jax.random.key(1))
    side_by_side = train.sweep(quad, W0, make, hps, **kw)
    one_by_one = train.sweep(quad, W0, make, hps, vectorize=False, **kw)
    for hp, a, b in zip(hps, side_by_side, one_by_one, strict=True):
        alone = train.train(quad, W0, constant(hp["learning_rate"]), **kw).history
        for h in (a.history, b.history):
            np.testing.assert_allclose(h.loss, alone.loss, rtol=1e-6)
            np.testing.assert_allclose(h.sharpness, alone.sharpness, rtol=1e-4)
    # the two lanes really differ
    assert side_by_side[0].history.loss[-1] != side_by_side[1].history.loss[-1]


def test_new_numbers_do_not_recompile():
    traces = []

    def counted(w, a):
        traces.append(1)
        return quad(w, a)

    make = tuners.factory("cdat")
    kw = dict(data=DATA, num_steps=4, record_every=2, key=jax.random.key(0))
    train.sweep(counted, W0, make, [{"sigma": 2.0, "ema_decay": 0.0}], **kw)
    first = len(traces)
    train.sweep(counted, W0, make, [{"sigma": 1.5, "ema_decay": 0.5}], **kw)
    assert first > 0
    assert len(traces) == first


def test_cdat_internals_are_recorded_and_consistent():
    res = train.sweep(
        quad,
        W0,
        tuners.factory("cdat"),
        [{"sigma": 2.0, "ema_decay": 0.0}],
        data=DATA,
        num_steps=6,
        record_every=3,
        key=jax.random.key(0),
    )[0]
    h = res.history
    assert {"numerator", "denominator", "slope", "curvature", "value"} <= set(h.internals)
    # η = σ n / d, n = -slope = |g|², d = gᵀAg, with g = A w at each step
    np.testing.assert_allclose(
        h.learning_rate, 2 * h.internals["numerator"] / h.internals["denominator"], rtol=1e-5
    )
    np.testing.assert_allclose(h.internals["value"], h.loss, rtol=1e-6)
    np.testing.assert_allclose(h.internals["numerator"], h.grad_norm**2, rtol=1e-5)


def test_learning_rate_is_nan_without_a_learning_rate_field():
    res = train.train(
        quad, W0, optax.sgd(0.1), data=DATA, num_steps=2, record_every=2, key=jax.random.key(0)
    )
    assert np.all(np.isnan(res.history.learning_rate))
    assert np.all(np.isnan(res.history.eos))
    assert res.history.loss[1] < res.history.loss[0]


def test_divergence_is_recorded_and_never_selected():
    runs = train.sweep(
        quad,
        W0,
        tuners.factory("constant"),
        [{"learning_rate": 0.1}, {"learning_rate": 2.0}],  # 2.0 * 5 = 10 > 2: diverges
        data=DATA,
        num_steps=400,
        record_every=200,
        key=jax.random.key(0),
    )
    bad = runs[1].history
    assert not np.isfinite(bad.loss[-1])
    assert np.isnan(bad.sharpness[-1])
    assert train.last_iterates_loss(bad) == float("inf")
    assert tuners.select_best([r.history for r in runs]) == (0, False)


def test_adam_sharpness_is_preconditioned_like_a_dense_computation():
    with jax.numpy_dtype_promotion("standard"):
        res = train.sweep(
            quad,
            W0,
            tuners.factory("constant", "adam"),
            [{"learning_rate": 0.05}],
            data=DATA,
            num_steps=5,
            record_every=5,
            key=jax.random.key(0),
            preconditioner=tuners.preconditioner("adam"),
        )[0]
    h = res.history
    assert h.preconditioned
    adam_state = res.opt_state[0][0]
    count = int(adam_state.count)
    nu_hat = np.asarray(adam_state.nu, np.float64) / (1 - 0.999**count)
    p = np.sqrt(nu_hat) + 1e-8
    expected = np.max(A / p)  # P^{-1/2} diag(A) P^{-1/2} is diagonal
    np.testing.assert_allclose(h.sharpness[-1], expected, rtol=1e-3)
    assert not np.isclose(expected, A.max(), rtol=0.1)  # preconditioning changed it


def test_minibatches_are_seeded_and_drawn_from_the_data():
    x = jnp.asarray(np.linspace(-1, 1, 32).reshape(32, 1), jnp.float32)

    def mean_sq(w, xs):
        return 0.5 * jnp.mean((xs @ w - 1.0) ** 2)

    kw = dict(data=(x,), num_steps=6, record_every=3, batch_size=4)
    w0 = jnp.zeros(1, jnp.float32)
    a = train.train(mean_sq, w0, constant(0.5), key=jax.random.key(3), **kw).history
    b = train.train(mean_sq, w0, constant(0.5), key=jax.random.key(3), **kw).history
    c = train.train(mean_sq, w0, constant(0.5), key=jax.random.key(4), **kw).history
    np.testing.assert_array_equal(a.loss, b.loss)
    assert not np.array_equal(a.loss, c.loss)
    # at w = 0 every example has loss 0.5, so the first batch loss is 0.5 whatever the batch
    np.testing.assert_allclose(a.loss[0], 0.5, rtol=1e-6)
    full = train.train(
        mean_sq, w0, constant(0.5), key=jax.random.key(3), **{**kw, "batch_size": None}
    )
    assert not np.allclose(a.loss[1:], full.history.loss[1:])


def test_last_iterates_loss_averages_the_last_five():
    h = train.History(
        np.arange(10.0), *([np.zeros(10)] * 2), {}, *([np.zeros(0)] * 5), False, 0.0, 0.0
    )
    assert train.last_iterates_loss(h) == pytest.approx(np.mean([5, 6, 7, 8, 9]))
    assert train.last_iterates_loss(h, last=2) == pytest.approx(8.5)


def test_initial_sharpness_matches_the_dense_hessian():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    lam = np.array([7.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    m = jnp.asarray((q * lam) @ q.T, jnp.float32)
    value = train.initial_sharpness(
        lambda w, m: 0.5 * w @ (m @ w), jnp.ones(6, jnp.float32), (m,), key=jax.random.key(0)
    )
    assert value == pytest.approx(7.0, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_steps": 0}, "num_steps"),
        ({"record_every": 0}, "record_every"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    base = dict(data=DATA, num_steps=4, record_every=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        train.sweep(
            quad, W0, tuners.factory("constant"), [{"learning_rate": 0.1}], **{**base, **kwargs}
        )


def test_sweep_needs_consistent_hyperparameters():
    base = dict(data=DATA, num_steps=4, record_every=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="same keys"):
        train.sweep(quad, W0, tuners.factory("constant"), [{"learning_rate": 0.1}, {}], **base)
    with pytest.raises(ValueError, match="at least one"):
        train.sweep(quad, W0, tuners.factory("constant"), [], **base)


def test_run_lanes_gives_each_lane_its_own_start_numbers_and_closed_form():
    """Lanes = 2 starts x 2 learning rates, each checked against w_t = (1 - ηa)^t w_0."""
    make = tuners.factory("constant")
    starts = [W0, jnp.asarray([-2.0, 1.0, 3.0], jnp.float32)]
    keys = [jax.random.key(0), jax.random.key(1)]
    lanes = [(s, eta) for s in (0, 1) for eta in (0.1, 0.3)]
    runs = train.run_lanes(
        quad,
        [starts[s] for s, _ in lanes],
        make,
        [{"learning_rate": eta} for _, eta in lanes],
        [keys[s] for s, _ in lanes],
        data=DATA,
        num_steps=6,
        record_every=3,
    )
    assert len(runs) == 4
    for (s, eta), run in zip(lanes, runs, strict=True):
        w_end = (1 - eta * A) ** 6 * np.asarray(starts[s])
        np.testing.assert_allclose(run.params, w_end, rtol=1e-5)
        w0 = np.asarray(starts[s])
        np.testing.assert_allclose(run.history.loss[0], 0.5 * np.sum(A * w0**2), rtol=1e-6)
        np.testing.assert_allclose(run.history.sharpness, A.max(), rtol=1e-4)


def test_run_lanes_padding_changes_no_number():
    make = tuners.factory("constant")
    kw = dict(data=DATA, num_steps=6, record_every=3)
    args = ([W0, 2 * W0], make, [{"learning_rate": 0.1}, {"learning_rate": 0.2}])
    keys = [jax.random.key(0)] * 2
    plain = train.run_lanes(quad, *args, keys, **kw)
    padded = train.run_lanes(quad, *args, keys, lanes_per_call=5, **kw)
    one_by_one = train.run_lanes(quad, *args, keys, lanes_per_call=1, **kw)
    assert len(padded) == len(one_by_one) == 2
    for a, b in zip(plain, one_by_one, strict=True):
        np.testing.assert_allclose(a.history.loss, b.history.loss, rtol=1e-6)
    for a, b in zip(plain, padded, strict=True):
        np.testing.assert_allclose(a.history.loss, b.history.loss, rtol=1e-6)
        np.testing.assert_allclose(a.params, b.params, rtol=1e-6)


def test_run_lanes_needs_one_start_and_key_per_lane():
    make = tuners.factory("constant")
    with pytest.raises(ValueError, match=r"params \(1\), hyperparams \(2\) and keys \(2\)"):
        train.run_lanes(
            quad, [W0], make, [{"learning_rate": 0.1}] * 2, [jax.random.key(0)] * 2,
            data=DATA, num_steps=3, record_every=3,
        )  # fmt: skip
    with pytest.raises(ValueError, match="at least one lane"):
        train.run_lanes(quad, [], make, [], [], data=DATA, num_steps=3)
