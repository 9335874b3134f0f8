"""scale_by_cdat and cdat: the exact step, EMA, state, hyperparameters, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core import testing


def _quadratic(seed=0, n=5):
    spd = testing.matrix_with_spectrum(testing.log_spaced_spectrum(n, 20.0, top=4.0), seed)
    A = jnp.asarray(spd.matrix)
    b = jnp.asarray(np.random.default_rng(seed).standard_normal(n))

    def loss(w):
        return 0.5 * w @ A @ w + b @ w

    return A, b, loss


@pytest.mark.parametrize("sigma", [1.0, 2.0, 2.0625])
def test_sgd_step_equals_closed_form(sigma):
    A, b, loss = _quadratic()
    w = jnp.asarray(np.random.default_rng(1).standard_normal(5))
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_cdat(sigma))
    state = opt.init(w)
    g = A @ w + b

    updates, state = jax.jit(lambda g, s, w: opt.update(g, s, w, value_fn=loss))(g, state, w)

    expected = -sigma * (g @ g) / (g @ A @ g) * g
    np.testing.assert_allclose(updates, expected, rtol=1e-12)
    inner = state[1]
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(
        sigma * float(g @ g / (g @ A @ g)), rel=1e-12
    )
    np.testing.assert_allclose(inner.value, loss(w), rtol=1e-12)
    np.testing.assert_allclose(inner.slope, -(g @ g), rtol=1e-12)
    np.testing.assert_allclose(inner.curvature, g @ A @ g, rtol=1e-12)
    assert bool(inner.finite) and int(inner.num_updates) == 1


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_adam_step_equals_rule_on_adams_direction():
    _A, _b, loss = _quadratic(seed=2)
    w = jnp.asarray(np.random.default_rng(3).standard_normal(5))
    opt = cc.cdat(optax.adam(1.0), sigma=2.0)
    adam = optax.adam(1.0)
    state, adam_state = opt.init(w), adam.init(w)
    for _ in range(3):
        g = jax.grad(loss)(w)
        u, adam_state = adam.update(g, adam_state, w)
        dc = cc.directional_curvature(loss, w, u)
        eta = cc.cdat_learning_rate(dc.slope, dc.curvature, sigma=2.0)
        updates, state = opt.update(g, state, w, value_fn=loss)
        np.testing.assert_allclose(updates, eta * u, rtol=1e-12)
        w = optax.apply_updates(w, updates)


def test_ema_initialisation_and_recursion():
    A, b, loss = _quadratic(seed=4)
    beta = 0.9
    opt = optax.chain(optax.sgd(1.0), cc.scale_by_cdat(2.0, ema_decay=beta, eps=0.5))
    w = jnp.asarray(np.random.default_rng(5).standard_normal(5))
    state = opt.init(w)
    assert float(state[1].numerator) == 0.0 and float(state[1].denominator) == 0.0
    ns, ds = [], []
    for t in range(4):
        g = A @ w + b
        ns.append(float(g @ g))
        ds.append(float(g @ A @ g) + 0.5)
        updates, state = opt.update(g, state, w, value_fn=loss)
        weights = [(1 - beta) * beta ** (t - s) for s in range(t + 1)]
        n_avg = sum(wt * n for wt, n in zip(weights, ns, strict=True))
        d_avg = sum(wt * d for wt, d in zip(weights, ds, strict=True))
        assert float(state[1].numerator) == pytest.approx(n_avg, rel=1e-12)
        assert float(state[1].denominator) == pytest.approx(d_avg, rel=1e-12)
        assert float(state[1].learning_rate) == pytest.approx(2.0 * n_avg / d_avg, rel=1e-12)
        if t == 0:  # zero initialisation: the bias cancels, the first step is the plain rule
            assert float(state[1].learning_rate) == pytest.approx(2.0 * ns[0] / ds[0], rel=1e-12)
        w = optax.apply_updates(w, updates)


def test_value_fn_gets_only_the_kwargs_it_names():
    seen = {}

    def loss(w, *, batch):
        seen["batch"] = batch
        return jnp.sum((w - batch) ** 2)

    opt = cc.cdat(optax.sgd(1.0))
    w = jnp.zeros(3)
    state = opt.init(w)
    batch = jnp.ones(3)
    g = jax.grad(loss)(w, batch=batch)
    updates, _ = opt.update(g, state, w, value_fn=loss, batch=batch, unrelated=123, grad=g)
    assert seen["batch"] is batch
    # u = -g = 2·batch, η_oe = 2·gᵀg/gᵀHg = 1 (H = 2I): the on-edge step mirrors w about the minimum
    np.testing.assert_allclose(updates, 2.0 * batch)

    def loss_kw(w, **kwargs):
        seen["kwargs"] = set(kwargs)
        return jnp.sum(w**2)

    opt.update(g, state, w, value_fn=loss_kw, batch=batch, unrelated=1)
    assert seen["kwargs"] == {"batch", "unrelated"}


def test_missing_value_fn_or_params_is_a_clear_error():
    opt = cc.cdat(optax.sgd(1.0))
    w = jnp.zeros(2)
    state = opt.init(w)
    with pytest.raises(TypeError, match="value_fn"):
        opt.update(w, state, w)
    with pytest.raises(TypeError, match="params"):
        opt.update(w, state, None, value_fn=lambda p: jnp.sum(p))
    with pytest.raises(ValueError, match="updates"):
        cc.scale_by_cdat().update({"a": w}, state[1], {"b": w}, value_fn=lambda p: 0.0)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_non_finite_value_gives_exactly_zero_update(bad):
    def loss(w):
        return jnp.sum(w**2) * bad

    opt = cc.cdat(optax.sgd(1.0), ema_decay=0.9)
    w = jnp.ones(3)
    state = opt.init(w)
    _, state = opt.update(2 * w, state, w, value_fn=lambda p: jnp.sum(p**2))  # one good step
    before = state[1]
    updates, state = opt.update(2 * w, state, w, value_fn=loss)
    assert np.all(np.asarray(updates) == 0.0) and not np.signbit(np.asarray(updates)).any()
    assert float(state[1].learning_rate) == 0.0 and not bool(state[1].finite)
    assert float(state[1].numerator) == float(before.numerator)  # averages untouched
    assert bool(jnp.all(jnp.isfinite(optax.apply_updates(w, updates))))


def test_non_finite_direction_gives_zero_update():
    opt = cc.cdat(optax.sgd(1.0))
    w = jnp.ones(3)
    state = opt.init(w)
    updates, state = opt.update(
        jnp.array([1.0, jnp.nan, 0.0]), state, w, value_fn=lambda p: jnp.sum(p**2)
    )
    assert np.all(np.asarray(updates) == 0.0) and not bool(state[1].finite)


def test_inject_hyperparams_changes_sigma_without_recompiling():
    _A, _b, loss = _quadratic(seed=6)
    traces = []
    opt = optax.chain(optax.sgd(1.0), optax.inject_hyperparams(cc.scale_by_cdat)(sigma=2.0))
    w = jnp.asarray(np.random.default_rng(7).standard_normal(5))
    state = opt.init(w)

    @jax.jit
    def step(w, state):
        traces.append(1)
        g = jax.grad(loss)(w)
        updates, state = opt.update(g, state, w, value_fn=loss)
        return updates, state

    u2, state = step(w, state)
    state[1].hyperparams["sigma"] = jnp.asarray(1.0, state[1].hyperparams["sigma"].dtype)
    u1, state = step(w, state)
    assert len(traces) == 1
    np.testing.assert_allclose(u1, 0.5 * u2, rtol=1e-12)
    assert float(optax.tree.get(state, "learning_rate")) > 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_kept_in_updates_and_state(dtype):
    params = {"w": jnp.ones((3, 2), dtype), "b": jnp.ones((2,), dtype)}

    def loss(p):
        out = jnp.sum(p["w"].astype(jnp.float32) ** 2) + jnp.sum(p["b"].astype(jnp.float32) ** 4)
        return out.astype(dtype)

    opt = cc.cdat(optax.sgd(1.0), sigma=2.0)
    state = opt.init(params)
    grads = jax.grad(loss)(params)
    updates, new_state = opt.update(grads, state, params, value_fn=loss)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True):
        assert old.dtype == new.dtype and old.shape == new.shape
    assert new_state[1].learning_rate.dtype == jnp.float32
    assert float(new_state[1].learning_rate) > 0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"ema_decay": -0.5}, "ema_decay"),
        ({"ema_decay": np.nan}, "ema_decay"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": np.nan}, "sigma"),
        ({"sigma": np.inf}, "sigma"),
        ({"eps": -1e-8}, "eps"),
        ({"eps": np.inf}, "eps"),
        ({"max_learning_rate": -1.0}, "max_learning_rate"),
        ({"max_learning_rate": np.nan}, "max_learning_rate"),
        ({"max_learning_rate": -np.inf}, "max_learning_rate"),
        ({"ema_decay": np.float32(1.0)}, "ema_decay"),
    ],
)
def test_python_number_hyperparameters_are_checked_at_build(kwargs, argument):
    with pytest.raises(ValueError, match=rf"scale_by_cdat: {argument} must be"):
        cc.scale_by_cdat(**kwargs)
    with pytest.raises(ValueError, match=argument):
        cc.cdat(optax.sgd(1.0), **kwargs)


def test_boundary_hyperparameters_are_accepted():
    for kwargs in (
        {"ema_decay": 0.0, "sigma": 0.0, "eps": 0.0, "max_learning_rate": 0.0},
        {"ema_decay": 0.999, "max_learning_rate": np.inf},
        {"ema_decay": np.float64(0.9), "sigma": 3},
    ):
        cc.scale_by_cdat(**kwargs)


def _injected_run(bad_name, bad_value, *, skip_bad_step=False):
    """Steps at w0, then (bad hyperparameter) at w1, then restored at w1 and onwards."""
    _A, _b, loss = _quadratic(seed=8)
    tuner = optax.inject_hyperparams(cc.scale_by_cdat)(sigma=1.5, ema_decay=0.5, eps=1e-3)
    opt = optax.chain(optax.sgd(1.0), tuner)
    w = jnp.asarray(np.random.default_rng(9).standard_normal(5))
    state = opt.init(w)
    traces = []

    @jax.jit
    def step(w, state):
        traces.append(None)
        updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
        return optax.apply_updates(w, updates), updates, state

    w, _, state = step(w, state)
    before = state[1].inner_state
    bad_step = None
    if not skip_bad_step:
        good = state[1].hyperparams[bad_name]
        state[1].hyperparams[bad_name] = jnp.asarray(bad_value, good.dtype)
        w, updates, state = step(w, state)
        bad_step = (updates, state[1].inner_state, before)
        state[1].hyperparams[bad_name] = good
    after = []
    for _ in range(3):
        w, _, state = step(w, state)
        after.append(state[1].inner_state)
    assert len(traces) == 1
    return bad_step, after


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("ema_decay", np.nan),
        ("ema_decay", np.inf),
        ("eps", np.nan),
        ("eps", np.inf),
        ("sigma", np.nan),
        ("max_learning_rate", np.nan),
    ],
)
def test_non_finite_traced_hyperparameter_never_poisons_the_state(name, bad):
    (updates, bad_state, before), after = _injected_run(name, bad)
    assert np.all(np.asarray(updates) == 0.0)
    assert float(bad_state.learning_rate) == 0.0 and not bool(bad_state.finite)
    # The averages are the ones from before the bad step: nothing non-finite was committed.
    assert float(bad_state.numerator) == float(before.numerator)
    assert float(bad_state.denominator) == float(before.denominator)
    # Restored: the run continues exactly as if the bad step had not happened.
    _, reference = _injected_run(name, bad, skip_bad_step=True)
    for ours, ref in zip(after, reference, strict=True):
        assert bool(ours.finite) and float(ours.learning_rate) > 0
        assert float(ours.learning_rate) == pytest.approx(float(ref.learning_rate), rel=1e-12)
        assert float(ours.numerator) == pytest.approx(float(ref.numerator), rel=1e-12)


def test_out_of_range_traced_hyperparameters_get_their_documented_safe_values():
    # ema_decay > 1 is clipped to 1: the averages (and so the learning rate) stay as they were.
    (updates, state, before), after = _injected_run("ema_decay", 1.5)
    assert float(state.numerator) == float(before.numerator)
    assert float(state.denominator) == float(before.denominator)
    assert float(state.learning_rate) == pytest.approx(float(before.learning_rate), rel=1e-12)
    assert bool(state.finite) and float(after[-1].learning_rate) > 0
    # A negative sigma or max_learning_rate gives no step; a negative eps counts as 0.
    for name in ("sigma", "max_learning_rate"):
        (updates, state, _), after = _injected_run(name, -1.0)
        assert float(state.learning_rate) == 0.0 and np.all(np.asarray(updates) == 0.0)
        assert float(after[-1].learning_rate) > 0
    (_, state, before), _ = _injected_run("eps", -1.0)
    slope, curvature = float(state.slope), float(state.curvature)
    numerator = 0.5 * max(-slope, 0.0) + 0.5 * float(before.numerator)
    denominator = 0.5 * abs(curvature) + 0.5 * float(before.denominator)
    assert float(state.learning_rate) == pytest.approx(1.5 * numerator / denominator, rel=1e-12)


def test_non_finite_params_give_zero_update_and_keep_the_averages():
    _A, _b, loss = _quadratic(seed=10)
    opt = cc.cdat(optax.sgd(1.0), ema_decay=0.9)
    w = jnp.ones(5)
    state = opt.init(w)
    _, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
    before = state[1]
    updates, state = opt.update(jax.grad(loss)(w), state, w.at[2].set(jnp.inf), value_fn=loss)
    assert np.all(np.asarray(updates) == 0.0) and not bool(state[1].finite)
    assert float(state[1].numerator) == float(before.numerator)
