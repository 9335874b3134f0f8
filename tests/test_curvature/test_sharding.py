"""Curvature entry points under jit on an 8-device mesh agree with one device.

JAX fixes the device count at start-up, so the check runs in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8. Params are sharded along a "model" axis
and data along a "data" axis of a 4 x 2 mesh, with explicit axes (JAX's default) and with
AxisType.Auto. Under explicit axes the model names the output sharding of its one contraction
over a sharded dimension, as JAX requires of user code there.
"""

import json

from cdat_core import testing

CODE = r"""
import json
import jax, jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import cdat_core as cc

assert jax.device_count() == 8
k = jax.random.split(jax.random.key(0), 5)
X = jax.random.normal(k[0], (32, 8)); Y = jax.random.normal(k[1], (32, 3))
params = {"w1": jax.random.normal(k[2], (8, 16)) / 3, "b1": 0.1 * jnp.ones(16),
          "w2": jax.random.normal(k[3], (16, 3)) / 4, "none": None}
u = jax.tree.map(lambda x: 0.1 * jax.random.normal(k[4], x.shape), params)
specs = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "none": None}

def make_model(out_spec):
    def predict(p, X):
        h = jnp.tanh(X @ p["w1"] + p["b1"][None, :])
        return jnp.matmul(h, p["w2"], out_sharding=out_spec)
    def loss(out, Y):
        return 0.5 * jnp.mean((out - Y) ** 2)
    return predict, loss

def run(predict, loss, p, u, X, Y):
    f = lambda p, X, Y: loss(predict(p, X), Y)
    dc = jax.jit(lambda p, u, X, Y: cc.directional_curvature(f, p, u, X, Y))(p, u, X, Y)
    hv = jax.jit(lambda p, u, X, Y: cc.hvp(f, p, u, X, Y))(p, u, X, Y)
    gn = jax.jit(lambda p, u, X, Y: cc.gauss_newton_curvature(
        predict, lambda out: loss(out, Y), p, u, X))(p, u, X, Y)
    return dc, hv, gn

ref = run(*make_model(None), params, u, X, Y)
report = {}
for name, types in [("explicit", (AxisType.Explicit,) * 2), ("auto", (AxisType.Auto,) * 2)]:
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=types)
    out_spec = P("data", None) if name == "explicit" else None
    with jax.set_mesh(mesh):
        put = lambda x, s: None if x is None else jax.device_put(x, NamedSharding(mesh, s))
        ps = jax.tree.map(put, params, specs, is_leaf=lambda x: x is None)
        us = jax.tree.map(put, u, specs, is_leaf=lambda x: x is None)
        Xs, Ys = put(X, P("data", None)), put(Y, P("data", None))
        assert len(ps["w1"].sharding.device_set) == 8
        dc, hv, gn = run(*make_model(out_spec), ps, us, Xs, Ys)
    rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30))
    report[name] = {
        "directional_curvature": max(rel(a, b) for a, b in zip(dc, ref[0])),
        "hvp": max(rel(a, b) for a, b in zip(jax.tree.leaves(hv), jax.tree.leaves(ref[1]))),
        "gauss_newton_curvature": max(rel(a, b) for a, b in zip(gn, ref[2])),
        "hvp_w1_spec": str(hv["w1"].sharding.spec),
    }
print(json.dumps(report))
"""


def test_sharded_curvature_matches_single_device():
    report = json.loads(testing.run_on_host_devices(CODE).strip().splitlines()[-1])
    assert set(report) == {"explicit", "auto"}
    for mode, errors in report.items():
        for name in ("directional_curvature", "hvp", "gauss_newton_curvature"):
            assert errors[name] <= 1e-5, (mode, name, errors[name])
    # The Hessian-vector product keeps the params' sharding under explicit axes.
    assert report["explicit"]["hvp_w1_spec"] in ("PartitionSpec(None, 'model')", "P(None, 'model')")
