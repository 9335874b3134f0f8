"""backtracking_linesearch under jit on an 8-device mesh agrees with one device.

JAX fixes the device count at start-up, so the check runs in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8. Every leaf of the params is sharded along
its leading axis over a 1-D mesh, with explicit axes (JAX's default) and with AxisType.Auto.
The objective is elementwise with full reductions, so it needs no contraction over a sharded
dimension (which explicit axes would ask the caller to annotate).
"""

import json

from cdat_core import testing

CODE = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from cdat_core.linesearch import backtracking_linesearch, initial_learning_rate

assert jax.device_count() == 8
rng = np.random.default_rng(0)
params = {"a": jnp.asarray(rng.uniform(-2, 2, 16)), "b": jnp.asarray(rng.normal(size=(8, 3))),
          "none": None}
scale = jnp.asarray(rng.uniform(1, 20, 16))

def fun(p, scale):
    a, b = p["a"], p["b"]
    return jnp.sum(scale * a**2 + jnp.cos(3 * a)) + jnp.sum(0.25 * b**4 - b)

@jax.jit
def search(p, scale, previous, c, delta, factor):
    value, grad = jax.value_and_grad(fun)(p, scale)
    u = jax.tree.map(jnp.negative, grad)
    slope = sum(jnp.sum(g * v) for g, v in zip(jax.tree.leaves(grad), jax.tree.leaves(u)))
    return backtracking_linesearch(
        fun, p, u, scale, value=value, slope=slope,
        initial_learning_rate=initial_learning_rate(previous, increase_factor=4.0),
        c=c, delta=delta, decrease_factor=factor)

settings = [(1.0, 0.0, 0.0, 0.8), (0.05, 1e-4, 0.0, 0.9), (1.0, 0.5, 1e-3, 0.5)]
ref = [search(params, scale, *s) for s in settings]
report = {"ref": [[float(r.learning_rate), int(r.num_steps), bool(r.accepted)] for r in ref]}
for name, types in [("explicit", (AxisType.Explicit,)), ("auto", (AxisType.Auto,))]:
    mesh = jax.make_mesh((8,), ("x",), axis_types=types)
    with jax.set_mesh(mesh):
        put = lambda x: jax.device_put(x, NamedSharding(mesh, P("x")))
        ps = jax.tree.map(put, params)
        ss = put(scale)
        assert len(ps["a"].sharding.device_set) == 8
        outs = [search(ps, ss, *s) for s in settings]
    report[name] = {
        "lr_rel": max(abs(float(o.learning_rate) - float(r.learning_rate))
                      / float(r.learning_rate) for o, r in zip(outs, ref)),
        "value_rel": max(abs(float(o.value) - float(r.value)) / abs(float(r.value))
                         for o, r in zip(outs, ref)),
        "same_steps": all(int(o.num_steps) == int(r.num_steps) for o, r in zip(outs, ref)),
        "same_accepted": all(bool(o.accepted) == bool(r.accepted) for o, r in zip(outs, ref)),
    }
print(json.dumps(report))
"""


def test_sharded_linesearch_matches_single_device():
    report = json.loads(testing.run_on_host_devices(CODE).strip().splitlines()[-1])
    # The reference searches all backtracked and were accepted: a non-trivial comparison.
    assert all(accepted and steps > 1 for _, steps, accepted in report["ref"])
    for mode in ("explicit", "auto"):
        errors = report[mode]
        assert errors["same_steps"] and errors["same_accepted"], (mode, errors)
        assert errors["lr_rel"] <= 1e-5, (mode, errors)
        assert errors["value_rel"] <= 1e-5, (mode, errors)
