"""Fixtures for the framework paths: standard dtype promotion and a small regression problem."""

import jax
import jax.numpy as jnp
import pytest


@pytest.fixture(autouse=True)
def _standard_dtype_promotion():
    """flax, equinox and optax's Adam mix dtypes internally, which strict promotion refuses."""
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.fixture
def regression_data():
    """``(x, y)``: 64 float32 examples of a smooth 4 -> 1 target."""
    x = jax.random.normal(jax.random.key(0), (64, 4), dtype=jnp.float32)
    y = jnp.sin(x @ jnp.arange(1.0, 5.0, dtype=jnp.float32))[:, None]
    return x, y
