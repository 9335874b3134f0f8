"""scale_by_cdat's opt-in loss check ``max_rise``: paper-exact when off, the closed forms,
bad input, tracing, and the ReLU + cross-entropy regression of issue 13."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc


def _kink(w):
    """w²/2 + 100·relu(-w - 1/2)²: at w = 1, slope -1 and curvature 1 along u = -f'(1)."""
    return jnp.sum(0.5 * w**2 + 100.0 * jnp.maximum(-w - 0.5, 0.0) ** 2)


def _one_step(loss, **kwargs):
    w = jnp.array([1.0])
    opt = cc.cdat(optax.sgd(1.0), sigma=2.0, **kwargs)
    updates, state = opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss)
    return w, updates, state[1]


def _tanh_mlp(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((16, 4)))
    y = jnp.asarray(rng.standard_normal((16, 2)))
    params = [jnp.asarray(rng.standard_normal((4, 8))), jnp.asarray(rng.standard_normal((8, 2)))]

    def loss(p):
        return 0.5 * jnp.mean((jnp.tanh(x @ p[0]) @ p[1] - y) ** 2)

    return params, loss


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_none_is_the_paper_rule_bit_for_bit():
    """max_rise=None: updates and state equal the rule built by hand from cdat_learning_rate."""
    w, loss = _tanh_mlp()
    adam, beta = optax.adam(1.0), 0.9
    opts = [cc.cdat(optax.adam(1.0), 2.0, ema_decay=beta, max_rise=None)]
    opts.append(cc.cdat(optax.adam(1.0), 2.0, ema_decay=beta))
    states = [o.init(w) for o in opts]
    adam_state, n_avg, d_avg = adam.init(w), jnp.zeros(()), jnp.zeros(())
    for _ in range(10):
        g = jax.grad(loss)(w)
        u, adam_state = adam.update(g, adam_state, w)
        dc = cc.directional_curvature(loss, w, u)
        n_avg = cc.ema(n_avg, jnp.maximum(-dc.slope, 0.0), beta)
        d_avg = cc.ema(d_avg, jnp.abs(dc.curvature), beta)
        eta = cc.cdat_learning_rate(-n_avg, d_avg, sigma=2.0)
        expected = jax.tree.map(lambda v, eta=eta: eta * v, u)
        for i, opt in enumerate(opts):
            updates, states[i] = opt.update(g, states[i], w, value_fn=loss)
            s = states[i][1]
            for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
                np.testing.assert_array_equal(a, b)
            assert float(s.learning_rate) == float(eta) == float(s.proposed_learning_rate)
            assert float(s.numerator) == float(n_avg) and float(s.denominator) == float(d_avg)
            assert int(s.num_backtracks) == 0 and bool(s.accepted)
        w = optax.apply_updates(w, expected)


def test_kink_closed_form():
    w, updates, s = _one_step(_kink)
    assert float(s.learning_rate) == 2.0 and float(updates[0]) == -2.0
    assert float(_kink(w + updates)) == 25.5
    w, updates, s = _one_step(_kink, max_rise=1.0)
    assert float(s.learning_rate) == 1.0 and float(updates[0]) == -1.0
    assert float(s.proposed_learning_rate) == 2.0
    assert int(s.num_backtracks) == 1 and bool(s.accepted) and bool(s.finite)
    assert float(_kink(w + updates)) == 0.0
    # a larger kappa tolerates the rise 25.0 <= kappa * 2 * 1
    _, updates, s = _one_step(_kink, max_rise=12.5)
    assert float(updates[0]) == -2.0 and int(s.num_backtracks) == 0


@pytest.mark.usefixtures("standard_dtype_promotion")
@pytest.mark.parametrize("sigma", [1.0, 2.0])
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_quadratic_never_backtracks(sigma, base):
    """On ½wᵀAw the step σn/d raises f by ηn(σ/2 - 1) <= 0: the check never fires for σ <= 2."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((6, 6))
    A = jnp.asarray(q @ q.T + 0.1 * np.eye(6))
    loss = lambda w: 0.5 * w @ A @ w  # noqa: E731
    w0 = jnp.asarray(rng.standard_normal(6))
    runs = []
    for kappa in (None, 1.0):
        opt = cc.cdat(optax.sgd(1.0) if base == "sgd" else optax.adam(1.0), sigma, max_rise=kappa)
        w, state, out = w0, opt.init(w0), []
        for _ in range(8):
            updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
            assert int(state[1].num_backtracks) == 0 and bool(state[1].accepted)
            out.append(updates)
            w = optax.apply_updates(w, updates)
        runs.append(out)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_infinite_trial_counts_as_failure():
    inf_beyond = lambda w: jnp.sum(jnp.where(w < -0.5, jnp.inf, 0.5 * w**2))  # noqa: E731
    _, updates, s = _one_step(inf_beyond, max_rise=1.0)
    assert float(s.learning_rate) == 1.0 and int(s.num_backtracks) == 1 and bool(s.accepted)
    # finite only at w = 1 itself: every trial fails, the step is zero
    only_here = lambda w: jnp.sum(jnp.where(w == 1.0, 0.5 * w**2, jnp.inf))  # noqa: E731
    _, updates, s = _one_step(only_here, max_rise=1.0, max_backtracks=5)
    assert float(s.learning_rate) == 0.0 and not bool(s.accepted)
    assert int(s.num_backtracks) == 5 and float(s.proposed_learning_rate) == 2.0
    np.testing.assert_array_equal(updates, jnp.zeros(1))
    assert not bool(jnp.signbit(updates[0]))


def test_no_backtracks_allowed_gives_an_exactly_zero_update():
    w, updates, s = _one_step(_kink, max_rise=1.0, max_backtracks=0)
    assert float(s.learning_rate) == 0.0 and not bool(s.accepted)
    assert int(s.num_backtracks) == 0 and float(s.proposed_learning_rate) == 2.0
    np.testing.assert_array_equal(updates, jnp.zeros(1))
    assert bool(jnp.all(jnp.isfinite(w + updates)))
    # the averages are the paper's: they advanced with this step's n and d
    assert float(s.numerator) == 1.0 and float(s.denominator) == 1.0 and bool(s.finite)


@pytest.mark.parametrize(
    ("kwargs", "argument", "error"),
    [
        ({"max_rise": -1.0}, "max_rise", ValueError),
        ({"max_rise": np.nan}, "max_rise", ValueError),
        ({"max_rise": np.inf}, "max_rise", ValueError),
        ({"max_rise": 1.0, "backtrack_factor": 0.0}, "backtrack_factor", ValueError),
        ({"max_rise": 1.0, "backtrack_factor": 1.0}, "backtrack_factor", ValueError),
        ({"max_rise": 1.0, "backtrack_factor": -0.5}, "backtrack_factor", ValueError),
        ({"max_rise": 1.0, "backtrack_factor": np.nan}, "backtrack_factor", ValueError),
        ({"max_rise": 1.0, "max_backtracks": -1}, "max_backtracks", ValueError),
        ({"max_rise": 1.0, "max_backtracks": 1.5}, "max_backtracks", TypeError),
        ({"max_rise": 1.0, "max_backtracks": True}, "max_backtracks", TypeError),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, argument, error):
    with pytest.raises(error, match=argument):
        cc.scale_by_cdat(**kwargs)
    with pytest.raises(error, match=argument):
        cc.cdat(optax.sgd(1.0), **kwargs)


def test_boundary_arguments_are_accepted():
    cc.scale_by_cdat(max_rise=0.0, backtrack_factor=0.999, max_backtracks=0)
    cc.scale_by_cdat(max_rise=np.float32(2.0), backtrack_factor=1e-3, max_backtracks=np.int64(3))


def test_traced_max_rise_does_not_retrace():
    tuner = optax.inject_hyperparams(cc.scale_by_cdat, static_args=("max_backtracks",))(
        sigma=2.0, max_rise=1.0, backtrack_factor=0.5, max_backtracks=20
    )
    opt = optax.chain(optax.sgd(1.0), tuner)
    traces = []

    @jax.jit
    def step(w, state):
        traces.append(None)
        return opt.update(jax.grad(_kink)(w), state, w, value_fn=_kink)

    w = jnp.array([1.0])
    state = opt.init(w)
    u1, _ = step(w, state)
    state[1].hyperparams["max_rise"] = jnp.asarray(100.0, state[1].hyperparams["max_rise"].dtype)
    u2, _ = step(w, state)
    state[1].hyperparams["max_rise"] = jnp.asarray(jnp.nan, state[1].hyperparams["max_rise"].dtype)
    u3, s3 = step(w, state)
    assert len(traces) == 1
    assert float(u1[0]) == -1.0 and float(u2[0]) == -2.0
    # a NaN traced max_rise: a zero update recorded as not finite, averages untouched
    np.testing.assert_array_equal(u3, jnp.zeros(1))
    assert not bool(s3[1].inner_state.finite) and float(s3[1].inner_state.numerator) == 0.0


def _torch_init(seed, sizes=(64, 32, 32, 10)):
    """The PyTorch/equinox default Linear init: W and b ~ U(±1/√fan_in), in float32."""
    key, params = jax.random.PRNGKey(seed), []
    for fan_in, fan_out in itertools.pairwise(sizes):
        key, kw, kb = jax.random.split(key, 3)
        lim = 1.0 / np.sqrt(fan_in)
        w = jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -lim, lim)
        b = jax.random.uniform(kb, (1, fan_out), jnp.float32, -lim, lim)
        params.append((w, b))
    return params


def _relu_ce_run(max_rise, seeds, steps=100):
    """Adam(1) + CDAT σ=2 β=0.9 on a ReLU MLP, first 512 digits, vmapped over seeds."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = jnp.asarray(digits.data[:512] / 16.0, jnp.float32)
    y = jnp.asarray(digits.target[:512], jnp.int32)

    def logits(params):
        h = x
        for w, b in params[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = params[-1]
        return h @ w + b

    def loss(params):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params), y).mean()

    opt = cc.cdat(optax.adam(1.0), sigma=2.0, ema_decay=0.9, max_rise=max_rise)

    def run(w0):
        def body(carry, _):
            w, state = carry
            f, g = jax.value_and_grad(loss)(w)
            updates, state = opt.update(g, state, w, value_fn=loss)
            return (optax.apply_updates(w, updates), state), f

        (w, _), fs = jax.lax.scan(body, (w0, opt.init(w0)), None, length=steps)
        accuracy = jnp.mean(jnp.argmax(logits(w), -1) == y)
        return accuracy, jnp.max(fs) / fs[0]

    w0 = jax.tree.map(lambda *a: jnp.stack(a), *[_torch_init(s) for s in seeds])
    return jax.jit(jax.vmap(run))(w0)


@pytest.mark.usefixtures("standard_dtype_promotion")
def test_relu_cross_entropy_regression():
    """Issue 13: at the PyTorch-default init the paper's rule overshoots 2-120x on step 0.

    The ``max_rise=None`` half proves the config exercises the failure (paper-exact collapses
    on some seeds); if it ever stops failing, revisit the config, do not delete the assertion.
    """
    seeds = list(range(10))
    accuracy, rise = _relu_ce_run(1.0, seeds)
    assert bool(jnp.all(accuracy >= 0.95)), accuracy
    assert bool(jnp.all(rise <= 1.5)), rise
    accuracy, _ = _relu_ce_run(None, seeds)
    assert bool(jnp.any(accuracy < 0.5)), accuracy
