"""Numeric hyperparameters of every tuner are traced: optax.inject_hyperparams can change them
during training without recompiling, and the change reaches the next step."""

import jax
import jax.numpy as jnp
import optax
import pytest

import cdat_core as cc

# factory, static (structural) arguments, hyperparameter to change, its two values
CASES = {
    "cdat": (cc.scale_by_cdat, (), "sigma", 2.0, 1.0),
    # (ema_decay would not show at the first step: the zero-initialised EMA's bias cancels.)
    "cdat_eps": (lambda eps: cc.scale_by_cdat(1.5, eps=eps), (), "eps", 0.0, 10.0),
    "linesearch": (cc.scale_by_linesearch, ("max_steps",), "decrease_factor", 0.8, 0.5),
    "polyak": (cc.scale_by_polyak, (), "max_learning_rate", 1.0, 0.01),
    "hypergradient": (
        lambda initial_learning_rate: cc.scale_by_hypergradient(
            0.1, initial_learning_rate=initial_learning_rate
        ),
        (),
        "initial_learning_rate",
        0.1,
        0.05,
    ),
    "sharpness": (cc.scale_by_sharpness, ("num_iters", "method"), "sigma", 2.0, 1.0),
}


def _loss(w):
    return jnp.sum(w**4) + 0.5 * jnp.sum(w**2)


@pytest.mark.parametrize("name", list(CASES))
def test_changing_a_hyperparameter_does_not_recompile(name):
    factory, static, key, first, second = CASES[name]
    kwargs = {key: first}
    if "max_steps" in static:
        kwargs["max_steps"] = 20
    if "num_iters" in static:
        kwargs.update(num_iters=4, method="lanczos")
    tuner = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
    opt = optax.chain(optax.sgd(1.0), tuner)
    traces = []

    @jax.jit
    def step(w, state):
        traces.append(1)
        updates, state = opt.update(jax.grad(_loss)(w), state, w, value_fn=_loss)
        return updates, state

    w = jnp.linspace(-1.0, 1.0, 5)
    state = opt.init(w)
    u1, s1 = step(w, state)
    state[1].hyperparams[key] = jnp.asarray(second, state[1].hyperparams[key].dtype)
    u2, s2 = step(w, state)
    assert len(traces) == 1
    assert float(optax.tree.get(s1, "learning_rate")) != float(optax.tree.get(s2, "learning_rate"))
    assert not bool(jnp.allclose(u1, u2))


@pytest.mark.parametrize(
    ("factory", "structural", "kwargs"),
    [
        (cc.scale_by_linesearch, "max_steps", {"max_steps": 20}),
        (cc.scale_by_sharpness, "num_iters", {"num_iters": 4}),
    ],
)
def test_structural_int_left_out_of_static_args_says_how_to_fix_it(factory, structural, kwargs):
    opt = optax.chain(optax.sgd(1.0), optax.inject_hyperparams(factory)(**kwargs))
    w = jnp.linspace(-1.0, 1.0, 5)
    state = opt.init(w)
    step = jax.jit(lambda w, s: opt.update(jax.grad(_loss)(w), s, w, value_fn=_loss))
    with pytest.raises(TypeError, match=rf"static_args=\('{structural}',\)"):
        step(w, state)
    # The fix the message names works.
    fixed = optax.inject_hyperparams(factory, static_args=(structural,))(**kwargs)
    opt = optax.chain(optax.sgd(1.0), fixed)
    _, state = jax.jit(lambda w, s: opt.update(jax.grad(_loss)(w), s, w, value_fn=_loss))(
        w, opt.init(w)
    )
    assert float(optax.tree.get(state, "learning_rate")) > 0


@pytest.mark.parametrize(
    ("factory", "kwargs", "argument"),
    [
        (cc.scale_by_cdat, {"ema_decay": 1.5}, "ema_decay"),
        (cc.scale_by_polyak, {"eps": -1.0}, "eps"),
        (cc.scale_by_hypergradient, {"beta": 0.1, "initial_learning_rate": -1.0}, "initial_"),
        (cc.scale_by_sharpness, {"sigma": float("nan")}, "sigma"),
    ],
)
def test_concrete_bad_hyperparameter_is_caught_when_inject_hyperparams_builds(
    factory, kwargs, argument
):
    # inject_hyperparams turns the numbers into concrete arrays at init: still checked there.
    tuner = optax.inject_hyperparams(factory)(**kwargs)
    with pytest.raises(ValueError, match=argument):
        tuner.init(jnp.zeros(3))
