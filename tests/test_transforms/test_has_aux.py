"""has_aux: every tuner takes a value_fn returning (loss, aux), uses the loss, drops aux.

aux at the current params is the caller's, from jax.value_and_grad(..., has_aux=True); these
tests run that loop under jit and lax.scan, with integer and boolean aux leaves and with flax
linen batch statistics, and check that the tuners' results equal those of the loss alone.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import cdat_core as cc
from cdat_core import testing
from cdat_core.lab.costs import xla_costs

# name -> factory(has_aux) of a whole chain; every tuner that takes a value_fn.
CHAINS = {
    "cdat": lambda has_aux: cc.cdat(optax.sgd(1.0), sigma=1.9, has_aux=has_aux),
    # max_rise=0: f may not rise, so the on-edge steps backtrack and the trials run.
    "cdat_max_rise": lambda has_aux: cc.cdat(
        optax.sgd(1.0), sigma=2.0, ema_decay=0.5, max_rise=0.0, has_aux=has_aux
    ),
    "linesearch": lambda has_aux: optax.chain(
        optax.sgd(1.0), cc.scale_by_linesearch(c=0.5, max_steps=50, has_aux=has_aux)
    ),
    "sharpness": lambda has_aux: optax.chain(
        optax.sgd(1.0), cc.scale_by_sharpness(sigma=1.8, num_iters=6, has_aux=has_aux)
    ),
    "polyak": lambda has_aux: optax.chain(
        optax.sgd(1.0), cc.scale_by_polyak(max_learning_rate=1.0, has_aux=has_aux)
    ),
    "hypergradient": lambda has_aux: optax.chain(
        optax.sgd(1.0),
        cc.scale_by_hypergradient(0.05, initial_learning_rate=0.05, has_aux=has_aux),
    ),
}
FACTORIES = {
    "scale_by_cdat": cc.scale_by_cdat,
    "cdat": lambda **kw: cc.cdat(optax.sgd(1.0), **kw),
    "scale_by_linesearch": cc.scale_by_linesearch,
    "scale_by_sharpness": cc.scale_by_sharpness,
    "scale_by_polyak": cc.scale_by_polyak,
    "scale_by_hypergradient": lambda **kw: cc.scale_by_hypergradient(0.1, **kw),
}


def _loss(p, batch):
    pred = jnp.tanh(batch["x"] @ p["w"]) @ p["v"]
    return 0.5 * jnp.mean((pred - batch["y"]) ** 2)


def _loss_and_aux(p, batch, aux):
    """The loss, and aux with a float metric, an int32 counter, a bool and an int from params."""
    loss = _loss(p, batch)
    new_aux = {
        "loss": loss,
        "count": aux["count"] + jnp.asarray(1, jnp.int32),
        "small": loss < 0.1,
        "argmax": jnp.argmax(p["w"][:, 0]).astype(jnp.int32),
        "nested": [jnp.sum(p["v"] ** 2), (jnp.zeros((2,), jnp.int32),)],
    }
    return loss, new_aux


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((24, 3)))
    batch = {"x": x, "y": jnp.sin(x @ jnp.asarray([1.0, -0.5, 2.0]))[:, None]}
    params = {
        "w": jnp.asarray(0.5 * rng.standard_normal((3, 6))),
        "v": jnp.asarray(0.3 * rng.standard_normal((6, 1))),
    }
    aux = {
        "loss": jnp.zeros(()),
        "count": jnp.zeros((), jnp.int32),
        "small": jnp.asarray(False),
        "argmax": jnp.zeros((), jnp.int32),
        "nested": [jnp.zeros(()), (jnp.zeros((2,), jnp.int32),)],
    }
    return params, batch, aux


def _scan_train(opt, value_fn, params, batch, aux, num_steps, *, pass_value_and_grad):
    """Train in one lax.scan; the caller reads aux from its own value_and_grad(has_aux=True)."""

    def step(carry, _):
        p, aux, state = carry
        (value, new_aux), grad = jax.value_and_grad(_loss_and_aux, has_aux=True)(p, batch, aux)
        extra = {"value": value, "grad": grad} if pass_value_and_grad else {}
        updates, state = opt.update(
            grad, state, p, value_fn=value_fn, batch=batch, aux=aux, **extra
        )
        return (optax.apply_updates(p, updates), new_aux, state), (value, updates, state)

    return jax.lax.scan(step, (params, aux, opt.init(params)), length=num_steps)


@pytest.mark.parametrize("pass_value_and_grad", [False, True])
@pytest.mark.parametrize("name", list(CHAINS))
def test_scan_with_aux_equals_loss_alone(name, pass_value_and_grad):
    params, batch, aux0 = _problem()
    num_steps = 6
    traces = []

    @jax.jit
    def run(params, aux):
        traces.append(1)
        with_aux = _scan_train(
            CHAINS[name](True), _loss_and_aux, params, batch, aux, num_steps,
            pass_value_and_grad=pass_value_and_grad,
        )  # fmt: skip
        loss_only = _scan_train(
            CHAINS[name](False), lambda p, batch: _loss(p, batch), params, batch, aux, num_steps,
            pass_value_and_grad=pass_value_and_grad,
        )  # fmt: skip
        return with_aux, loss_only

    ((p_aux, aux, state_aux), ys_aux), ((p_ref, _, state_ref), ys_ref) = run(params, aux0)
    run(params, aux0)
    assert len(traces) == 1
    # The tuner saw only the loss: every update and every state equal the loss-only run's.
    testing.assert_tree_allclose(ys_aux, ys_ref, rtol=1e-12, atol=1e-15)
    testing.assert_tree_allclose(p_aux, p_ref, rtol=1e-12, atol=1e-15)
    assert jax.tree.structure(state_aux) == jax.tree.structure(state_ref)  # no aux in the state
    # The caller's aux is that of the last evaluation, at the params before the last update.
    values = ys_aux[0]
    last_params = jax.tree.map(lambda p, u: p - u[-1], p_aux, ys_aux[1])
    assert int(aux["count"]) == num_steps and aux["count"].dtype == jnp.int32
    assert float(aux["loss"]) == pytest.approx(float(values[-1]), rel=1e-12)
    assert float(aux["loss"]) == pytest.approx(float(_loss(last_params, batch)), rel=1e-10)
    assert bool(aux["small"]) == bool(values[-1] < 0.1)
    assert float(values[-1]) < float(values[0])
    assert float(optax.tree.get(state_aux, "learning_rate")) > 0
    # The trial evaluations at w + ηu (of value_fn with aux) did run.
    states = ys_aux[2]
    if name == "cdat_max_rise":
        assert int(jnp.sum(states[1].num_backtracks)) > 0
    if name == "linesearch":
        assert int(jnp.max(states[1].num_steps)) > 1


def _update(opt, value_fn, grad, state, params):
    return opt.update(grad, state, params, value_fn=value_fn)


@pytest.mark.parametrize("name", list(CHAINS))
def test_aux_costs_nothing_in_the_compiled_update(name):
    """Under jit, aux is dead code in the tuner's passes: XLA counts the flops of the loss alone."""
    m = jax.random.normal(jax.random.key(0), (200, 200), jnp.float64)

    def expensive_aux(p):
        loss = jnp.sum((p - 1.0) ** 2) + jnp.sum(jnp.cosh(p))
        big = jnp.tanh(m * p[0]) @ m @ m  # ~1.6e7 flops, depends on params
        return loss, {"big": jnp.sum(big), "argmax": jnp.argmax(big[0]), "pos": p[0] > 0}

    def loss_only(p):
        return expensive_aux(p)[0]

    p = jnp.ones(3)
    assert xla_costs(expensive_aux, p).flops > 1e7  # so the equality below can fail
    flops = {}
    for has_aux, value_fn in ((True, expensive_aux), (False, loss_only)):
        opt = CHAINS[name](has_aux)
        g = jax.grad(loss_only)(p)
        update = functools.partial(_update, opt, value_fn)
        flops[has_aux] = xla_costs(update, g, opt.init(p), p).flops
    assert flops[True] == flops[False] < 1e6


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        h = nn.Dense(8, name="dense")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
        return nn.Dense(1)(jnp.tanh(h))


@pytest.fixture
def flax_promotion(standard_dtype_promotion):
    """flax linen's Dense adds its bias by rank promotion, which the strict config refuses."""
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.mark.usefixtures("flax_promotion")
@pytest.mark.parametrize("name", ["cdat", "cdat_max_rise", "linesearch"])
def test_flax_linen_batch_stats_carried_through_training(name):
    model = _BatchNormNet()
    batch = _problem(1)[1]
    x, y = batch["x"].astype(jnp.float32), batch["y"].astype(jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    params, stats0 = variables["params"], variables["batch_stats"]

    def loss(params, batch_stats):
        pred, mutated = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean((pred - y) ** 2), mutated["batch_stats"]

    def loss_alone(params, batch_stats):
        return loss(params, batch_stats)[0]

    def train(opt, value_fn, num_steps=30):
        def step(carry, _):
            p, stats, state = carry
            (value, new_stats), grad = jax.value_and_grad(loss, has_aux=True)(p, stats)
            updates, state = opt.update(grad, state, p, value_fn=value_fn, batch_stats=stats)
            return (optax.apply_updates(p, updates), new_stats, state), (value, p)

        carry = (params, stats0, opt.init(params))
        return jax.jit(lambda c: jax.lax.scan(step, c, length=num_steps))(carry)

    (p, stats, state), (values, trajectory) = train(CHAINS[name](True), loss)
    (p_ref, _, state_ref), (values_ref, _) = train(CHAINS[name](False), loss_alone)
    testing.assert_tree_allclose((p, state), (p_ref, state_ref), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(values, values_ref, rtol=1e-6)
    assert float(values[-1]) < 0.5 * float(values[0])
    # The running mean, replayed by hand from the params of every step: m ← 0.9 m + 0.1 mean(h).
    mean = stats0["bn"]["mean"]
    for t in range(values.shape[0]):
        dense = trajectory["dense"]
        h = x @ dense["kernel"][t] + dense["bias"][t]
        mean = 0.9 * mean + 0.1 * jnp.mean(h, axis=0)
    np.testing.assert_allclose(stats["bn"]["mean"], mean, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(stats["bn"]["mean"] - stats0["bn"]["mean"]))) > 1e-3


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, np.bool_(True)])
@pytest.mark.parametrize("factory", list(FACTORIES))
def test_has_aux_must_be_a_python_bool(factory, bad):
    with pytest.raises(TypeError, match="has_aux must be True or False"):
        FACTORIES[factory](has_aux=bad)


def _lower_update(opt, value_fn, **extra):
    p = jnp.ones(3)
    return jax.jit(lambda s, p: opt.update(-p, s, p, value_fn=value_fn, **extra)).lower(
        opt.init(p), p
    )


@pytest.mark.parametrize("factory", list(FACTORIES))
def test_mismatched_output_is_a_trace_time_error(factory):
    def scalar(p):
        return jnp.sum(p**2)

    def pair(p):
        return jnp.sum(p**2), {"count": jnp.asarray(1, jnp.int32)}

    opt = FACTORIES[factory](has_aux=True)
    with pytest.raises(ValueError, match=r"has_aux=True, so value_fn must return a pair"):
        _lower_update(opt, scalar)
    opt = FACTORIES[factory]()
    with pytest.raises(TypeError, match=r"value_fn must return a scalar.*has_aux=True"):
        _lower_update(opt, pair)
    # The matching pairs trace; a list pair is accepted, as jax.value_and_grad accepts it.
    _lower_update(FACTORIES[factory](has_aux=True), pair)
    _lower_update(FACTORIES[factory](has_aux=True), lambda p: list(pair(p)))
    _lower_update(FACTORIES[factory](), scalar)


def test_pair_with_a_non_scalar_loss_names_the_loss():
    opt = cc.scale_by_cdat(has_aux=True)
    with pytest.raises(TypeError, match=r"value_fn \(the loss, first element.*shape \(3,\)"):
        _lower_update(opt, lambda p: (p**2, {}))


@pytest.mark.parametrize("factory", ["scale_by_linesearch", "scale_by_polyak"])
def test_value_given_as_the_pair_says_to_pass_the_loss(factory):
    def pair(p):
        return jnp.sum(p**2), {"n": jnp.asarray(1, jnp.int32)}

    p = jnp.ones(3)
    (value, aux), grad = jax.value_and_grad(pair, has_aux=True)(p)
    opt = FACTORIES[factory](has_aux=True)
    with pytest.raises(ValueError, match="pass value=loss"):
        opt.update(-grad, opt.init(p), p, value_fn=pair, value=(value, aux), grad=grad)


def test_missing_value_fn_error_mentions_the_pair():
    opt = cc.scale_by_cdat(has_aux=True)
    p = jnp.ones(2)
    with pytest.raises(TypeError, match=r"value_fn=loss.*\(loss, aux\)"):
        opt.update(-p, opt.init(p), p)


def test_inject_hyperparams_keeps_has_aux_static():
    def pair(w):
        return jnp.sum(w**4) + 0.5 * jnp.sum(w**2), {"step": jnp.asarray(0, jnp.int32)}

    tuner = optax.inject_hyperparams(cc.scale_by_cdat)(sigma=1.0, has_aux=True)
    opt = optax.chain(optax.sgd(1.0), tuner)
    w = jnp.ones(3)
    state = opt.init(w)
    assert "has_aux" not in state[1].hyperparams
    grad = jax.grad(lambda w: pair(w)[0])(w)
    _, state = jax.jit(lambda g, s, w: opt.update(g, s, w, value_fn=pair))(grad, state, w)
    assert float(optax.tree.get(state, "learning_rate")) > 0


def test_hypergradient_with_grad_only_checks_the_loss_of_the_pair():
    """Given grad but not value, the hypergradient tuner evaluates value_fn once for f(w)."""
    params, batch, aux = _problem(2)
    grad = jax.grad(_loss)(params, batch)
    results = []
    for has_aux, value_fn in ((True, _loss_and_aux), (False, lambda p, batch: _loss(p, batch))):
        opt = CHAINS["hypergradient"](has_aux)
        update = jax.jit(lambda g, s, p, fn=value_fn, opt=opt: opt.update(
            g, s, p, value_fn=fn, grad=g, batch=batch, aux=aux
        ))  # fmt: skip
        results.append(update(grad, opt.init(params), params))
    testing.assert_tree_allclose(results[0], results[1], rtol=1e-12, atol=1e-15)
    bad = lambda p: jnp.sum(p["w"])  # noqa: E731
    with pytest.raises(ValueError, match="has_aux=True"):
        opt = CHAINS["hypergradient"](True)
        opt.update(grad, opt.init(params), params, value_fn=bad, grad=grad)
