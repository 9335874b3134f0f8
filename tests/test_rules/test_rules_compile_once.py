"""Every rule jits once: repeated calls with new values (hyperparameters too) do not retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc

RULES = {
    "cdat": lambda a, b, h: cc.cdat_learning_rate(-jnp.abs(a), b, sigma=h, eps=h / 10),
    "greedy": lambda a, b, h: cc.greedy_learning_rate(-jnp.abs(a), b, max_learning_rate=h),
    "on_edge": lambda a, b, h: cc.on_edge_learning_rate(-jnp.abs(a), b, max_learning_rate=h),
    "sharpness": lambda a, b, h: cc.sharpness_learning_rate(b, sigma=h),
    "polyak": lambda a, b, h: cc.polyak_learning_rate(b, a**2, f_star=h / 10),
    "hypergradient": lambda a, b, h: cc.hypergradient_learning_rate(
        b, jnp.stack([a, b]), jnp.stack([b, -a]), beta=h / 10
    ),
    "ema": lambda a, b, h: cc.ema(a, b, h / 10),
}


@pytest.mark.parametrize("name", list(RULES))
def test_rule_traces_once(name):
    traces = []

    def rule(a, b, h):
        traces.append(1)
        return RULES[name](a, b, h)

    jitted = jax.jit(rule)
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(3):
        a, b, h = (jnp.asarray(x) for x in rng.uniform(0.5, 2.0, size=3))
        out = jitted(a, b, h)
        np.testing.assert_allclose(out, RULES[name](a, b, h), rtol=1e-12)
        outs.append(float(out))
    assert len(traces) == 1
    assert len(set(outs)) == 3  # new values really reached the compiled rule
