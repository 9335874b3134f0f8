"""Fixtures for the transforms tests: the tuners every generic test runs over."""

import jax
import optax
import pytest

import cdat_core as cc
from cdat_core import testing

TUNERS = {
    "cdat_sgd": lambda: cc.cdat(optax.sgd(1.0), sigma=1.9),
    "cdat_momentum_ema": lambda: cc.cdat(optax.sgd(1.0, momentum=0.9), sigma=1.0, ema_decay=0.5),
    "cdat_adam_ema": lambda: cc.cdat(optax.adam(1.0), sigma=1.0, ema_decay=0.9),
    "hypergradient_adam": lambda: optax.chain(
        optax.adam(1.0), cc.scale_by_hypergradient(0.01, initial_learning_rate=1e-3)
    ),
    # Full batch: the paper backtracks until the criterion holds, so max_steps is generous.
    "linesearch": lambda: optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(c=0.5, max_steps=100)),
    "linesearch_increase": lambda: optax.chain(
        optax.sgd(1.0),
        cc.scale_by_linesearch(c=0.5, increase_factor=4.0, decrease_factor=0.9, max_steps=200),
    ),
    "sharpness": lambda: optax.chain(optax.sgd(1.0), cc.scale_by_sharpness(sigma=1.8, num_iters=8)),
    "polyak": lambda: optax.chain(optax.sgd(1.0), cc.scale_by_polyak(max_learning_rate=1.0)),
}


def pytest_generate_tests(metafunc):
    """Run every test that asks for ``tuner_name`` once per tuner."""
    if "tuner_name" in metafunc.fixturenames:
        metafunc.parametrize("tuner_name", list(TUNERS))


@pytest.fixture
def make_tuner(tuner_name):
    """A factory of fresh transformations for the tuner under test."""
    return TUNERS[tuner_name]


@pytest.fixture
def standard_dtype_promotion():
    """optax's Adam raises a float to an int32 count, which strict promotion refuses."""
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.fixture
def sharp_mlp():
    """``make(seed) -> (params, loss)``: a small MLP with inputs scaled up so searches backtrack."""

    def make(seed=0):
        m = testing.mlp((4, 8, 3), num_examples=16, seed=seed)
        inputs = 3.0 * m.inputs  # sharper, so that searches backtrack

        def loss(p):
            return m.loss(p, inputs, m.targets)

        return m.params, loss

    return make
