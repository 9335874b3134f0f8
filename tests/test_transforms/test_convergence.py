"""Every tuner converges inside lax.scan on a parabola, Rosenbrock and a mixed pytree.

Modelled on optax's contrib convergence tests: a full run compiled as one scan, the final
objective compared with the known minimum.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


def parabola(p):
    return jnp.sum((p - 1.0) ** 2)


def rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def mixed(p):
    # A 1-D and a 2-D leaf coupled by a product term, non-quadratic, minimum 0 at (1, 2).
    a, b = p["vector"] - 1.0, p["matrix"] - 2.0
    return jnp.sum(a**2) + jnp.sum(b**2) + jnp.sum(a) ** 2 * jnp.sum(b) ** 2 + 0.1 * jnp.sum(b**4)


PROBLEMS = {
    "parabola": (parabola, lambda: jnp.zeros(2), 0.0, 1e-8),
    "rosenbrock": (rosenbrock, lambda: jnp.array([-1.2, 1.0]), 0.0, 1e-3),
    "mixed": (mixed, lambda: {"vector": jnp.zeros(3), "matrix": jnp.zeros((2, 3))}, 0.0, 1e-8),
}


def _run(opt, fun, params, num_steps):
    def body(carry, _):
        p, state = carry
        value, grad = jax.value_and_grad(fun)(p)
        updates, state = opt.update(grad, state, p, value_fn=fun, value=value, grad=grad)
        return (optax.apply_updates(p, updates), state), value

    @jax.jit
    def run(p, state):
        return jax.lax.scan(body, (p, state), length=num_steps)

    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int32 counts
        (p, state), values = run(params, opt.init(params))
    return p, state, values


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_converges(make_tuner, problem):
    fun, init, minimum, tol = PROBLEMS[problem]
    p, state, values = _run(make_tuner(), fun, init(), num_steps=3000)
    final = float(fun(p))
    assert np.isfinite(final)
    assert final - minimum <= tol, final
    assert float(values[0]) > final
    lr = optax.tree.get(state, "learning_rate")
    assert bool(jnp.isfinite(lr)) and float(lr) >= 0.0
