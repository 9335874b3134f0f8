"""polyak_learning_rate equals the step of optax.polyak_sgd on the same inputs.

optax.polyak_sgd = chain(sgd(scaling), scale_by_polyak(max_learning_rate, f_min, eps,
variant)): with scaling = 1 its update is -η·∇f(w) with
η = min((f(w) - f_min) / (‖∇f(w)‖² + eps), max_learning_rate), the gap clipped at 0 for
variant="sps+". So η is read back from the update as -⟨update, ∇f⟩ / ‖∇f‖².

Two documented differences (tested below): optax's default variant "sps" keeps a negative
gap (an ascent step) where cdat_core gives 0; and optax returns 0 when ‖∇f‖² + eps is at most
float64 epsilon, where cdat_core gives max_learning_rate (a positive gap with no gradient to
bound the step). Neither arises at the inputs of the equality tests.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cdat_core as cc
from cdat_core import _tree, testing


@functools.partial(jax.jit, static_argnames=("variant",))
def optax_step(value, grad, *, f_star=0.0, max_learning_rate=1.0, eps=0.0, variant="sps+"):
    opt = optax.polyak_sgd(
        max_learning_rate=max_learning_rate, f_min=f_star, eps=eps, variant=variant
    )
    updates, _ = opt.update(grad, opt.init(grad), grad, value=value)
    return -_tree.vdot(updates, grad) / _tree.sq_norm(grad)


def _cases():
    rng = np.random.default_rng(0)
    for _ in range(12):
        scale = 10.0 ** rng.uniform(-3, 1)
        grad = {
            "w": jnp.asarray(scale * rng.standard_normal((3, 4))),
            "b": jnp.asarray(scale * rng.standard_normal(4)),
            "skip": None,
        }
        yield jnp.asarray(10.0 ** rng.uniform(-3, 2)), grad


@pytest.mark.parametrize(
    ("f_star", "max_learning_rate", "eps"),
    list(itertools.product([0.0, 0.3], [1.0, 100.0], [0.0, 1e-3])),
)
def test_equals_optax_polyak_sgd_on_random_inputs(f_star, max_learning_rate, eps):
    capped = uncapped = 0
    for value, grad in _cases():
        ours = cc.polyak_learning_rate(
            value,
            _tree.sq_norm(grad),
            f_star=f_star,
            max_learning_rate=max_learning_rate,
            eps=eps,
        )
        for variant in ("sps+", "sps") if value > f_star else ("sps+",):
            theirs = optax_step(
                value,
                grad,
                f_star=f_star,
                max_learning_rate=max_learning_rate,
                eps=eps,
                variant=variant,
            )
            np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-12, atol=1e-300)
        capped += float(ours) == max_learning_rate
        uncapped += 0 < float(ours) < max_learning_rate
    assert capped and uncapped  # both regimes of the min were exercised


def test_equals_optax_polyak_sgd_along_an_mlp_run():
    m = testing.mlp((4, 6, 2), 12, seed=3)
    params, opt = m.params, optax.polyak_sgd(max_learning_rate=10.0)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(m.loss)(params, m.inputs, m.targets)
        ours = cc.polyak_learning_rate(value, _tree.sq_norm(grad), max_learning_rate=10.0)
        updates, state = opt.update(grad, state, params, value=value)
        return grad, ours, updates, state

    for _ in range(10):
        grad, ours, updates, state = step(params, state)
        expected = jax.tree.map(lambda g, eta=ours: -eta * g, grad)
        testing.assert_tree_allclose(updates, expected, rtol=1e-12, atol=1e-15)
        params = optax.apply_updates(params, updates)
    assert float(m.loss(params, m.inputs, m.targets)) < float(m.loss(m.params, m.inputs, m.targets))


def test_negative_gap_differs_from_optax_sps():
    grad = jnp.asarray([1.0, 2.0])  # ‖∇f‖² = 5, gap = 0.5 - 1 = -0.5
    assert float(cc.polyak_learning_rate(0.5, 5.0, f_star=1.0)) == 0.0
    assert float(optax_step(0.5, grad, f_star=1.0, variant="sps+")) == 0.0
    np.testing.assert_allclose(float(optax_step(0.5, grad, f_star=1.0, variant="sps")), -0.1)


def test_vanishing_gradient_differs_from_optax():
    grad = jnp.asarray([1e-9, 0.0])  # ‖∇f‖² = 1e-18 ≤ float64 eps
    opt = optax.polyak_sgd(max_learning_rate=1.0)
    updates, _ = opt.update(grad, opt.init(grad), grad, value=2.0)
    assert float(jnp.max(jnp.abs(updates))) == 0.0  # optax: no step
    assert float(cc.polyak_learning_rate(2.0, _tree.sq_norm(grad))) == 1.0  # cdat_core: the cap
