"""flax linen: a TrainState through apply_gradients, and plain params with a dropout key."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from flax.training import train_state

import cdat_core as cc
from cdat_core.frameworks import apply_gradients


class _MLP(nn.Module):
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train=False):
        h = jnp.tanh(nn.Dense(16)(x))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(1)(h)


def _cdat():
    return cc.cdat(optax.adam(1.0), sigma=2.0, ema_decay=0.9, max_rise=1.0)


def _state(x, tx, cls=train_state.TrainState, **fields):
    module = _MLP()
    params = module.init(jax.random.key(0), x)["params"]
    return cls.create(apply_fn=module.apply, params=params, tx=tx, **fields)


def _loss_of(state):
    def loss(params, x, y):
        return 0.5 * jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    return loss


def test_train_state_loss_falls_and_compiles_once(regression_data):
    x, y = regression_data
    state = _state(x, _cdat())
    loss = _loss_of(state)
    traces = []

    @jax.jit
    def step(state, x, y):
        traces.append(1)
        grads = jax.grad(loss)(state.params, x, y)
        return apply_gradients(state, grads=grads, value_fn=loss, x=x, y=y)

    first = float(loss(state.params, x, y))
    for _ in range(40):
        state = step(state, x, y)
    assert float(loss(state.params, x, y)) < 0.3 * first
    assert int(state.step) == 40
    assert float(optax.tree.get(state.opt_state, "learning_rate")) > 0
    assert len(traces) == 1


def test_flax_apply_gradients_never_reaches_the_tuner(regression_data):
    """Why the helper exists: TrainState.apply_gradients sends extra arguments to replace."""
    x, y = regression_data
    state = _state(x, _cdat())
    loss = _loss_of(state)
    grads = jax.grad(loss)(state.params, x, y)
    with pytest.raises(TypeError, match="needs the objective"):
        state.apply_gradients(grads=grads, value_fn=loss, x=x, y=y)


class _StateWithStats(train_state.TrainState):
    batch_stats: dict


def test_apply_gradients_is_tx_update_then_apply_updates(regression_data):
    x, y = regression_data
    stats = {"mean": jnp.arange(3.0)}
    state = _state(x, _cdat(), cls=_StateWithStats, batch_stats=stats)
    loss = _loss_of(state)
    grads = jax.grad(loss)(state.params, x, y)
    new = apply_gradients(state, grads=grads, value_fn=loss, x=x, y=y)
    updates, opt_state = state.tx.update(
        grads, state.opt_state, state.params, value_fn=loss, x=x, y=y
    )
    expected = optax.apply_updates(state.params, updates)
    assert all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected), strict=True)
    )
    assert float(optax.tree.get(new.opt_state, "learning_rate")) == float(
        optax.tree.get(opt_state, "learning_rate")
    )
    assert int(new.step) == 1
    assert new.batch_stats is stats  # other fields untouched


def test_plain_params_with_a_dropout_key_per_step(regression_data):
    """The key is an extra argument: every evaluation in one step uses the same mask."""
    x, y = regression_data
    module = _MLP(dropout=0.2)
    params = module.init(jax.random.key(0), x)["params"]
    tx = _cdat()

    def loss(params, x, y, key):
        out = module.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return 0.5 * jnp.mean((out - y) ** 2)

    def clean_loss(params):
        return float(0.5 * jnp.mean((module.apply({"params": params}, x) - y) ** 2))

    @jax.jit
    def step(params, opt_state, key):
        grads = jax.grad(loss)(params, x, y, key)
        updates, opt_state = tx.update(grads, opt_state, params, value_fn=loss, x=x, y=y, key=key)
        return optax.apply_updates(params, updates), opt_state

    first = clean_loss(params)
    opt_state = tx.init(params)
    for key in jax.random.split(jax.random.key(1), 40):
        params, opt_state = step(params, opt_state, key)
    assert clean_loss(params) < 0.8 * first  # measured 0.65: dropout 0.2 slows the fit
    assert bool(optax.tree.get(opt_state, "finite"))


class _BatchNormMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(nn.Dense(16)(x))
        return nn.Dense(1)(jnp.tanh(h))


def test_batch_stats_as_aux_with_has_aux(regression_data):
    """BatchNorm's new statistics are the aux of value_fn; the tuner uses the loss alone."""
    x, y = regression_data
    module = _BatchNormMLP()
    variables = module.init(jax.random.key(0), x, train=False)
    state = _StateWithStats.create(
        apply_fn=module.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=cc.cdat(optax.adam(1.0), sigma=2.0, ema_decay=0.9, max_rise=1.0, has_aux=True),
    )

    def loss(params, x, y, batch_stats):
        out, updates = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return 0.5 * jnp.mean((out - y) ** 2), updates["batch_stats"]

    traces = []

    @jax.jit
    def step(state):
        traces.append(1)
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(
            state.params, x, y, state.batch_stats
        )
        state = apply_gradients(
            state, grads=grads, value_fn=loss, x=x, y=y, batch_stats=state.batch_stats
        )
        return state.replace(batch_stats=stats), value

    first = float(loss(state.params, x, y, state.batch_stats)[0])
    for _ in range(40):
        state, _ = step(state)
    assert float(loss(state.params, x, y, state.batch_stats)[0]) < 0.3 * first
    assert len(traces) == 1
    # The running mean moved to the batch mean of the current pre-activations (momentum 0.5).
    pre = x @ state.params["Dense_0"]["kernel"] + state.params["Dense_0"]["bias"][None, :]
    running = state.batch_stats["BatchNorm_0"]["mean"]
    assert float(jnp.max(jnp.abs(running - pre.mean(0)))) < 0.1 * float(jnp.std(pre))
    # Without has_aux the pair is refused with a hint.
    plain = state.replace(tx=cc.cdat(optax.sgd(1.0), sigma=2.0))
    plain = plain.replace(opt_state=plain.tx.init(plain.params))
    grads = jax.grad(lambda p: loss(p, x, y, state.batch_stats)[0])(plain.params)
    with pytest.raises(TypeError, match="has_aux=True"):
        apply_gradients(plain, grads=grads, value_fn=loss, x=x, y=y, batch_stats=state.batch_stats)
