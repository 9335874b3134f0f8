"""cdat_core.lab.benchmark_models: the models, curvature methods and steps the benchmarks
measure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import _tree, testing
from cdat_core.lab import benchmark_models as bm

F32 = jnp.float32


def _run(fn, *args):
    """Compile at LLVM -O0 (fast to build; these tests check values, not speed) and run."""
    return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


@pytest.mark.parametrize("name", ["mlp2", "conv"])
def test_problem_is_float32_and_loss_composes(name):
    p = bm.benchmark_problem(name)
    value, composed = _run(
        lambda w, x, y: (p.loss(w, x, y), p.output_loss(p.predict(w, x), y)),
        p.params,
        p.inputs,
        p.targets,
    )
    assert value.dtype == F32 and bool(jnp.isfinite(value))
    assert all(x.dtype == F32 for x in jax.tree.leaves((p.params, p.direction)))
    assert jax.tree.structure(p.params) == jax.tree.structure(p.direction)
    np.testing.assert_allclose(value, composed, rtol=1e-6)


def test_unknown_problem_raises():
    with pytest.raises(ValueError, match="unknown problem"):
        bm.benchmark_problem("resnet")


def test_curvature_methods_agree_with_each_other():
    p = bm.benchmark_problem("mlp2")
    m = bm.curvature_methods(p)
    names = ("value_and_grad", "directional_curvature", "hvp_dot", "finite_difference")
    (value, grad), dc, hvp_dot, fd = _run(lambda *a: [m[k](*a) for k in names], *p.args)
    np.testing.assert_allclose(dc.value, value, rtol=1e-6)
    np.testing.assert_allclose(dc.slope, _tree.vdot(grad, p.direction), rtol=1e-4)
    np.testing.assert_allclose(dc.curvature, hvp_dot, rtol=1e-3)
    np.testing.assert_allclose(fd[1], dc.slope, rtol=1e-2)  # float32 central difference


def test_tuner_steps_run_and_cdat_takes_the_on_edge_step():
    p = bm.benchmark_problem("mlp2")
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam: float ** int32 count
        steps = bm.tuner_steps(p, sigma=2.0)
    assert set(steps) == {"sgd", "sgd+cdat", "adam", "adam+cdat"}
    step, args = steps["sgd+cdat"]

    def both(*args):
        grad = jax.grad(p.loss)(p.params, p.inputs, p.targets)
        u = jax.tree.map(jnp.negative, grad)
        curv = cc.directional_curvature(p.loss, p.params, u, p.inputs, p.targets)
        return step(*args), grad, curv

    (params, state, value), grad, curv = _run(both, *args)
    assert bool(jnp.isfinite(value))
    # u = -g: η = 2(-gᵀu) / uᵀHu, and the new params are w + ηu.
    eta = 2 * -curv.slope / curv.curvature
    np.testing.assert_allclose(state[1].learning_rate, eta, rtol=1e-4)
    expected = jax.tree.map(lambda w, g: w - eta * g, p.params, grad)
    testing.assert_tree_allclose(params, expected, rtol=1e-4, atol=1e-6)
