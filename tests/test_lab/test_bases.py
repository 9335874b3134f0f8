"""cdat_core.lab.bases: the base optimizers, their edge of stability and preconditioner."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cdat_core.lab import bases, plots, train


def test_preconditioner_only_for_adam():
    assert bases.preconditioner("gd") is None
    assert bases.preconditioner("momentum") is None
    assert bases.preconditioner("adam") is bases.preconditioner("adam")
    with pytest.raises(ValueError, match="unknown base optimizer"):
        bases.preconditioner("sgd9")


@pytest.mark.parametrize("name", list(bases.BASES))
def test_each_base_at_learning_rate_one_descends(name):
    opt = bases.BASES[name].build()
    g = jnp.asarray([1.0, -2.0], jnp.float32)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int32
        updates, _ = opt.update(g, opt.init(jnp.zeros(2, jnp.float32)))
    assert float(jnp.sum(updates * g)) < 0


def test_edges_follow_the_momentum_formulas():
    beta = 0.9
    assert bases.BASES["gd"].edge == 2.0
    assert bases.BASES["momentum"].edge == pytest.approx(2 * (1 + beta))
    assert bases.BASES["adam"].edge == pytest.approx(2 * (1 + beta) / (1 - beta))
    assert dict(plots.EDGES) == {k: v.edge for k, v in bases.BASES.items()}


def test_a_base_optimizer_is_one_registration():
    spec = bases.BaseSpec("rmsprop", lambda: optax.rmsprop(1.0), "RMSProp", edge=2.0)
    with bases.BASES.scoped():
        bases.BASES.register(spec)
        assert "rmsprop" in plots.EDGES and bases.preconditioner("rmsprop") is None
    assert "rmsprop" not in bases.BASES


def test_adam_preconditioner_reads_the_state():
    opt = bases.BASES["adam"].build()
    w = jnp.ones(2, jnp.float32)
    with jax.numpy_dtype_promotion("standard"):
        _, state = opt.update(jnp.asarray([3.0, 4.0], jnp.float32), opt.init(w))
        p = bases.preconditioner("adam")(state)
    # after one step ν̂ = g², so P = |g| + ε
    np.testing.assert_allclose(p, [3.0, 4.0], rtol=1e-5)
    assert train.adam_preconditioner() is bases.preconditioner("adam")
