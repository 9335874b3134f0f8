"""The tuner contract for every CDAT curvature estimator and every refresh interval.

Build-time errors that name the argument; an exactly zero update with learning rate 0 and
untouched averages and quotient on non-finite input; a probe that overflows never makes a NaN;
one compilation (also with ``every`` traced by ``optax.inject_hyperparams``); a hypothesis
property over random quadratics (no subnormal, NaN or huge draws): finite steps, and every
refreshed estimate equal to u^T A u; the same steps on an 8-device mesh as on one device.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cdat_core as cc
from cdat_core import testing

A0 = jnp.asarray(testing.matrix_with_spectrum([3.0, 1.0, 0.25], 0).matrix)


def _loss(w, scale=1.0):
    return scale * (0.5 * w @ A0 @ w + jnp.sum(jnp.cosh(0.3 * w)))


def _split():
    return cc.GaussNewtonCurvature(lambda w: w, lambda out, scale=1.0: _loss(out, scale))


ESTIMATORS = ["exact", "parabolic", "lagged", "forward_edge", "gauss_newton"]


def _estimator(name):
    return _split() if name == "gauss_newton" else name


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"curvature": "Exact"}, "curvature"),
        ({"curvature": "gauss_newton"}, "curvature"),
        ({"curvature": None}, "curvature"),
        ({"curvature": 3}, "curvature"),
        ({"every": 0}, "every"),
        ({"every": -2}, "every"),
        ({"every": 2.5}, "every"),
        ({"every": True}, "every"),
        ({"every": "4"}, "every"),
    ],
)
def test_bad_curvature_or_every_is_a_value_error_at_build(kwargs, argument):
    with pytest.raises(ValueError, match=rf"scale_by_cdat: {argument} must|{argument}="):
        cc.scale_by_cdat(**kwargs)
    with pytest.raises(ValueError, match=argument):
        cc.cdat(optax.sgd(1.0), **kwargs)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: cc.ParabolicCurvature(initial_step=0.0), "initial_step"),
        (lambda: cc.LaggedCurvature(initial_step=float("nan")), "initial_step"),
        (lambda: cc.ForwardEdgeCurvature(max_evaluations=0), "max_evaluations"),
        (lambda: cc.ForwardEdgeCurvature(max_evaluations=2.0), "max_evaluations"),
        (lambda: cc.ForwardEdgeCurvature(rtol=1.0), "rtol"),
        (lambda: cc.ForwardEdgeCurvature(initial_step=-1.0), "initial_step"),
    ],
)
def test_bad_estimator_settings_are_value_errors_naming_them(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_early_refresh_must_be_a_bool():
    with pytest.raises(ValueError, match="early_refresh"):
        cc.scale_by_cdat(every=4, early_refresh=1)


def test_gauss_newton_needs_callables():
    with pytest.raises(TypeError, match="predict"):
        cc.GaussNewtonCurvature(1.0, _loss)


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_non_finite_objective_gives_zero_update_and_keeps_the_state(name, every):
    opt = cc.cdat(optax.sgd(1.0), sigma=1.5, ema_decay=0.5, curvature=_estimator(name), every=every)

    @jax.jit
    def update(w, state, scale):
        value, grad = jax.value_and_grad(_loss)(w, scale)
        return opt.update(grad, state, w, value_fn=_loss, scale=scale, value=value, grad=grad)

    w = jnp.array([1.0, -0.5, 2.0])
    updates, state = update(w, opt.init(w), 1.0)
    w = optax.apply_updates(w, updates)
    before = state[1]
    for bad in (np.nan, np.inf):
        updates, bad_state = update(w, state, bad)
        assert np.all(np.asarray(updates) == 0.0) and not np.signbit(np.asarray(updates)).any()
        inner = bad_state[1]
        assert float(inner.learning_rate) == 0.0 and not bool(inner.finite)
        for field in ("numerator", "denominator", "quotient", "num_refreshes"):
            assert float(getattr(inner, field)) == float(getattr(before, field)), field
        assert np.isfinite(float(inner.quotient)) and np.isfinite(float(inner.direction_sq_norm))
    updates, state = update(w, bad_state, 1.0)  # and the next good step proceeds
    assert bool(state[1].finite) and float(state[1].learning_rate) > 0


@pytest.mark.parametrize("name", ESTIMATORS)
def test_non_finite_direction_or_params_give_zero_update(name):
    opt = cc.cdat(optax.sgd(1.0), curvature=_estimator(name))
    w = jnp.array([1.0, -0.5, 2.0])
    state = opt.init(w)
    for u, p in ((jnp.array([1.0, np.nan, 0.0]), w), (jax.grad(_loss)(w), w.at[1].set(np.inf))):
        updates, new = opt.update(u, state, p, value_fn=_loss)
        assert np.all(np.asarray(updates) == 0.0)
        assert float(new[1].learning_rate) == 0.0 and not bool(new[1].finite)


def test_a_probe_that_overflows_is_never_a_nan():
    def loss(w):  # finite only within |w| < 2: a far probe is inf
        return jnp.where(jnp.all(jnp.abs(w) < 2.0), jnp.sum(w**2), jnp.inf)

    w = jnp.array([1.0, 0.5])
    # The parabola's probe at a previous rate of 10 lands outside: a zero update, rate 0.
    opt = cc.cdat(optax.sgd(1.0), curvature="parabolic")
    state = opt.init(w)
    state = (state[0], state[1]._replace(learning_rate=jnp.asarray(10.0, jnp.float64)))
    updates, new = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
    assert np.all(np.asarray(updates) == 0.0) and float(new[1].learning_rate) == 0.0
    # The edge search counts an infinite probe as "above": it shrinks and finds the edge
    # of the finite part (f(w + eta u) = f(w) at eta = 1, the mirror image of w).
    opt = cc.cdat(optax.sgd(1.0), sigma=2.0, curvature="forward_edge")
    state = opt.init(w)
    state = (state[0], state[1]._replace(learning_rate=jnp.asarray(10.0, jnp.float64)))
    updates, new = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
    assert bool(new[1].finite) and float(new[1].learning_rate) == pytest.approx(1.0, rel=1e-9)
    assert bool(jnp.isfinite(loss(optax.apply_updates(w, updates))))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_jitted_step_compiles_once(name):
    traces = []
    opt = cc.cdat(optax.sgd(1.0), sigma=1.5, curvature=_estimator(name), every=3)

    @jax.jit
    def step(w, state):
        traces.append(1)
        value, grad = jax.value_and_grad(_loss)(w)
        updates, state = opt.update(grad, state, w, value_fn=_loss, value=value, grad=grad)
        return optax.apply_updates(w, updates), state

    w = jnp.array([1.0, -0.5, 2.0])
    state = opt.init(w)
    for _ in range(5):
        w, state = step(w, state)
    assert len(traces) == 1 and int(state[1].num_refreshes) == 2
    assert float(_loss(w)) < float(_loss(jnp.array([1.0, -0.5, 2.0])))


def test_traced_every_works_without_recompiling():
    """Without static_args, inject_hyperparams traces ``every``: it still refreshes as asked."""
    traces = []
    inner = optax.inject_hyperparams(cc.scale_by_cdat)(sigma=1.0, curvature="parabolic", every=2)
    opt = optax.chain(optax.sgd(1.0), inner)

    @jax.jit
    def step(w, state):
        traces.append(1)
        value, grad = jax.value_and_grad(_loss)(w)
        updates, state = opt.update(grad, state, w, value_fn=_loss, value=value, grad=grad)
        return optax.apply_updates(w, updates), state

    w = jnp.array([1.0, -0.5, 2.0])
    state = opt.init(w)
    refreshes = []
    for t in range(6):
        if t == 4:
            state[1].hyperparams["every"] = jnp.asarray(1)  # weakly typed, as injected
        w, state = step(w, state)
        refreshes.append(int(state[1].inner_state.num_refreshes))
    assert len(traces) == 1
    assert refreshes == [1, 1, 2, 2, 3, 4]


_STEPS = {}


def _quadratic_step(name, every):
    """One jitted update per (estimator, every), with the problem as arguments."""
    if (name, every) not in _STEPS:

        def loss(w, A, b):
            return 0.5 * w @ A @ w + b @ w

        curvature = name
        if name == "gauss_newton":
            curvature = cc.GaussNewtonCurvature(
                lambda w: w, lambda out, A, b: 0.5 * out @ A @ out + b @ out
            )

        def step(w, state, A, b, sigma, beta):
            opt = cc.cdat(optax.sgd(1.0), sigma, ema_decay=beta, curvature=curvature, every=every)
            value, grad = jax.value_and_grad(loss)(w, A, b)
            updates, state = opt.update(
                grad, state, w, value_fn=loss, A=A, b=b, value=value, grad=grad
            )
            return updates, state

        _STEPS[name, every] = jax.jit(step)
    return _STEPS[name, every]


@settings(max_examples=12)
@given(
    spd=testing.spd_matrices(4, 4, condition_number=(1.0, 1e3), top=(1e-2, 1e2)),
    b=st.lists(testing.floats(-10.0, 10.0), min_size=4, max_size=4),
    w0=st.lists(testing.floats(-10.0, 10.0), min_size=4, max_size=4),
    sigma=testing.floats(0.1, 3.0),  # sigma = 0 never steps: see the non-finite tests
    beta=testing.floats(0.0, 0.99),
    name=st.sampled_from(ESTIMATORS),
    every=st.sampled_from([1, 2]),
)
def test_on_any_quadratic_steps_are_finite_and_refreshes_exact(
    spd, b, w0, sigma, beta, name, every
):
    A, b, w = jnp.asarray(spd.matrix), jnp.asarray(b), jnp.asarray(w0)
    step = _quadratic_step(name, every)
    state = cc.cdat(optax.sgd(1.0), curvature=_estimator(name)).init(w)
    previous = None
    for _ in range(4):
        g = A @ w + b
        updates, state = step(w, state, A, b, sigma, beta)
        inner = state[1]
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))
        assert bool(jnp.all(jnp.isfinite(updates))) and float(inner.learning_rate) >= 0.0
        n = float(g @ g)
        if n > 1e-12 and int(inner.since_refresh) == 1 and bool(inner.finite):
            if name == "lagged" and previous is not None and int(inner.num_probes) == 0:
                expected = (previous @ A @ previous) / (previous @ previous) * n
            else:
                expected = g @ A @ g
            np.testing.assert_allclose(inner.curvature, expected, rtol=1e-6)
        previous = g
        w = optax.apply_updates(w, updates)


CODE = r"""
import json
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import cdat_core as cc

def predict(p, x):  # elementwise: no contraction over a sharded axis
    return {"a": jnp.tanh(p["w"] * x), "b": 0.3 * p["b"]}

def output_loss(out):
    return jnp.mean(out["a"] ** 2) + jnp.mean(jnp.cosh(out["b"]))

def loss(p, x):
    return output_loss(predict(p, x))

estimators = {"exact_every3": ("exact", 3), "parabolic": ("parabolic", 1),
              "lagged": ("lagged", 1), "forward_edge": ("forward_edge", 2),
              "gauss_newton": (cc.GaussNewtonCurvature(predict, output_loss), 1)}
k = jax.random.split(jax.random.key(0), 3)
params = {"w": jax.random.normal(k[0], (16, 4)), "b": jax.random.normal(k[1], (16,))}
x = jax.random.normal(k[2], (16, 4))

def run(opt, p, x):
    def step(p, s):
        value, grad = jax.value_and_grad(loss)(p, x)
        u, s = opt.update(grad, s, p, value_fn=loss, x=x, value=value, grad=grad)
        return optax.apply_updates(p, u), s
    step = jax.jit(step)
    s = opt.init(p)
    for _ in range(4):
        p, s = step(p, s)
    return p, optax.tree.get(s, "learning_rate"), s[1].num_refreshes

report = {}
for mode, types in [("explicit", (AxisType.Explicit,)), ("auto", (AxisType.Auto,))]:
    mesh = jax.make_mesh((8,), ("x",), axis_types=types)
    for name, (curvature, every) in estimators.items():
        if mode == "auto" and name not in ("lagged", "forward_edge"):  # their cond, while_loop
            continue
        opt = cc.cdat(optax.sgd(1.0), sigma=2.0, curvature=curvature, every=every)
        ref_p, ref_lr, ref_n = run(opt, params, x)
        with jax.set_mesh(mesh):
            put = lambda a: jax.device_put(a, NamedSharding(mesh, P("x")))
            p, lr, n = run(opt, jax.tree.map(put, params), put(x))
        err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_p)))
        report[f"{mode}/{name}"] = {"param_err": err, "lr": float(lr), "ref_lr": float(ref_lr),
                                    "refreshes": [int(n), int(ref_n)],
                                    "devices": len(p["w"].sharding.device_set)}
print(json.dumps(report))
"""


def test_sharded_steps_match_single_device():
    report = json.loads(testing.run_on_host_devices(CODE).strip().splitlines()[-1])
    assert len(report) == 7
    for name, r in report.items():
        assert r["devices"] == 8, name
        assert r["param_err"] <= 1e-9, (name, r)
        assert abs(r["lr"] - r["ref_lr"]) <= 1e-9 * max(1.0, abs(r["ref_lr"])), (name, r)
        assert r["lr"] > 0 and r["refreshes"][0] == r["refreshes"][1], (name, r)
