"""hessian_sharpness under jit on an 8-device mesh agrees with one device.

JAX fixes the device count at start-up, so the check runs in a subprocess with 8 CPU
devices. With explicit mesh axes (JAX's default) the objective uses only elementwise ops and
full reductions of params sharded along their leading axis, so no contraction needs an output
sharding, and the Hessian is preconditioned (a sharded P); with AxisType.Auto the objective
is an MLP with its data sharded along the batch and the plain Hessian. Same key throughout.
"""

import json

from cdat_core import testing

CODE = r"""
import json
import jax, jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import cdat_core as cc
from cdat_core import testing

assert jax.device_count() == 8
ks = jax.random.split(jax.random.key(1), 6)
params = {"a": jax.random.normal(ks[0], (16,)), "b": jax.random.normal(ks[1], (8, 3)), "c": None}
coef = {"a": jax.random.uniform(ks[2], (16,)) * 3, "b": jax.random.uniform(ks[3], (8, 3))}
direc = {"a": jax.random.normal(ks[4], (16,)), "b": jax.random.normal(ks[5], (8, 3))}
precond = {"a": 1.0 + jnp.arange(16.0) / 16, "b": 0.5 + jnp.ones((8, 3)), "c": None}

def separable(p, coef, direc):
    # Hessian: diag(coef + sech²(p)) + d dᵀ with d = direc (a rank-one coupling).
    quad = sum(jnp.sum(0.5 * coef[n] * p[n] ** 2 + jnp.log(jnp.cosh(p[n]))) for n in "ab")
    lin = sum(jnp.sum(direc[n] * p[n]) for n in "ab")
    return quad + 0.5 * lin**2

mlp = testing.mlp((8, 16, 4), num_examples=32, seed=3)

def sharp(fun, p, *args, pre=None):
    run = jax.jit(lambda p, key, *args: cc.hessian_sharpness(
        fun, p, *args, key=key, num_iters=24, k=2, rtol=0.0, preconditioner=pre))
    res = run(p, jax.random.key(7), *args)
    return [float(x) for x in res.eigenvalues], res

reference = {
    "separable_pre": sharp(separable, params, coef, direc, pre=precond)[0],
    "mlp": sharp(mlp.loss, mlp.params, mlp.inputs, mlp.targets)[0],
}
report = {"reference": reference}
for mode in ("explicit", "auto"):
    types = (AxisType.Explicit,) if mode == "explicit" else (AxisType.Auto,)
    mesh = jax.make_mesh((8,), ("x",), axis_types=types)
    put = lambda x, s: None if x is None else jax.device_put(x, NamedSharding(mesh, s))
    lead = lambda t: jax.tree.map(lambda x: put(x, P("x")), t, is_leaf=lambda x: x is None)
    with jax.set_mesh(mesh):
        out = {}
        if mode == "explicit":
            ps, cs, ds, pre = lead(params), lead(coef), lead(direc), lead(precond)
            assert len(ps["a"].sharding.device_set) == 8
            out["separable_pre"], res = sharp(separable, ps, cs, ds, pre=pre)
            out["vector_spec"] = str(res.eigenvectors["b"].sharding.spec)
        else:
            X, Y = put(mlp.inputs, P("x")), put(mlp.targets, P("x"))
            pm = jax.tree.map(lambda x: put(x, P()), mlp.params)
            out["mlp"], _ = sharp(mlp.loss, pm, X, Y)
    report[mode] = out
print(json.dumps(report))
"""


def _rel(a, b):
    return max(abs(x - y) / max(abs(y), 1e-30) for x, y in zip(a, b, strict=True))


def test_sharded_hessian_sharpness_matches_single_device():
    report = json.loads(testing.run_on_host_devices(CODE).strip().splitlines()[-1])
    ref = report["reference"]
    assert _rel(report["explicit"]["separable_pre"], ref["separable_pre"]) <= 1e-5
    assert _rel(report["auto"]["mlp"], ref["mlp"]) <= 1e-5
    # Two distinct top eigenvalues, largest first (not degenerate copies).
    assert ref["separable_pre"][0] > ref["separable_pre"][1] > 0
    assert ref["mlp"][0] > ref["mlp"][1]
    # Eigenvectors keep the params' sharding (leading axis k unsharded).
    assert report["explicit"]["vector_spec"] in (
        "PartitionSpec(None, 'x', None)",
        "P(None, 'x', None)",
    )
