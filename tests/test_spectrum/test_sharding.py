"""The spectrum tools under jit on an 8-device mesh (explicit axes), against closed forms.

JAX fixes the device count at start-up, so the check runs in a subprocess with 8 CPU
devices. Params are sharded along their leading axis; the objective is separable, so every
figure has a closed form (the diagonal Hessian's moments, trace and diagonal, a block's top
eigenvalue, a diagonal Gauss-Newton matrix). Hutch++ has none: it is compared with the same
call on one device (same key, same bits).
"""

import json

import numpy as np

from cdat_core import testing

CODE = r"""
import json
import jax, jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import cdat_core as cc

assert jax.device_count() == 8
ks = jax.random.split(jax.random.key(1), 4)
params = {"a": jax.random.normal(ks[0], (16,)), "b": jax.random.normal(ks[1], (8, 3)), "c": None}
coef = {"a": 0.5 + jax.random.uniform(ks[2], (16,)) * 3, "b": jax.random.uniform(ks[3], (8, 3))}

def f(p, coef):
    return sum(jnp.sum(0.5 * coef[n] * p[n] ** 2) for n in "ab")

def predict(p, coef):
    return {"a": jnp.tanh(p["a"]), "b": 2.0 * p["b"]}

def loss(out):
    return 0.5 * jnp.sum(out["a"] ** 2) + 0.5 * jnp.sum(0.25 * out["b"] ** 2)

def hutch_pp(p, coef, key):
    return cc.hessian_trace(f, p, coef, key=key, num_probes=9, method="hutch++").trace

@jax.jit
def run(p, coef, key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    dens = cc.hessian_spectral_density(f, p, coef, key=k1, num_probes=2, num_steps=4)
    trace = cc.hessian_trace(f, p, coef, key=k2, num_probes=4)
    hpp = hutch_pp(p, coef, k2)
    diag = cc.hessian_diagonal(f, p, coef, key=k3, num_probes=2)
    block = cc.block_sharpness(f, p, coef, mask={"a": True, "b": False, "c": False}, key=k4,
                               num_iters=16, rtol=1e-9)
    ggn = cc.gauss_newton_sharpness(predict, loss, p, coef, key=k4, num_iters=40, rtol=1e-9)
    top = jax.tree.map(lambda x: x[0], block.eigenvectors)
    align = cc.update_alignment(top, block.eigenvectors,
                                previous_update=jax.tree.map(jnp.negative, top))
    moments = [jnp.mean(jnp.sum(dens.weights * dens.nodes**k, axis=1)) for k in range(8)]
    return dict(moments=jnp.stack(moments), density_finite=jnp.all(jnp.isfinite(dens.density)),
                trace=trace.trace, trace_se=trace.standard_error, hpp=hpp,
                diag=diag.diagonal, block=block.eigenvalues[0], ggn=ggn.eigenvalues[0],
                alignment=align.alignment, cosine=align.cosine, vector=block.eigenvectors)

KEY = jax.random.key(7)
flat = jnp.concatenate([coef["a"], coef["b"].ravel()])
ggn_diag = jnp.concatenate([(1 - jnp.tanh(params["a"]) ** 2) ** 2, jnp.ones(24)])
report = {
    "expect": {
        "moments": [float(jnp.mean(flat**k)) for k in range(8)],
        "trace": float(jnp.sum(flat)), "block": float(jnp.max(coef["a"])),
        "ggn": float(jnp.max(ggn_diag)),
    },
    # The one figure without a closed form, on one device (only this part is compiled twice).
    "reference_hpp": float(jax.jit(hutch_pp)(params, coef, jax.random.split(KEY, 4)[1])),
}
mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
put = lambda x: None if x is None else jax.device_put(x, NamedSharding(mesh, P("x")))
lead = lambda t: jax.tree.map(put, t, is_leaf=lambda x: x is None)
with jax.set_mesh(mesh):
    ps, cs = lead(params), lead(coef)
    assert len(ps["a"].sharding.device_set) == 8
    out = run(ps, cs, KEY)
    diag_err = max(float(jnp.max(jnp.abs(out["diag"][n] - coef[n]))) for n in "ab")
    report["sharded"] = {
        "moments": [float(x) for x in out["moments"]],
        "density_finite": bool(out["density_finite"]),
        "trace": float(out["trace"]), "trace_se": float(out["trace_se"]),
        "hpp": float(out["hpp"]), "diag_err": diag_err, "block": float(out["block"]),
        "ggn": float(out["ggn"]), "alignment": float(out["alignment"]),
        "cosine": float(out["cosine"]),
        "vector_spec": str(out["vector"]["b"].sharding.spec),
        "diag_spec": str(out["diag"]["b"].sharding.spec),
    }
print(json.dumps(report))
"""


def test_spectrum_tools_on_an_explicit_8_device_mesh():
    report = json.loads(testing.run_on_host_devices(CODE).strip().splitlines()[-1])
    expect, got = report["expect"], report["sharded"]
    np.testing.assert_allclose(got["moments"], expect["moments"], rtol=1e-10)
    assert got["density_finite"]
    np.testing.assert_allclose(got["trace"], expect["trace"], rtol=1e-12)
    assert got["trace_se"] < 1e-10 and got["diag_err"] < 1e-12
    np.testing.assert_allclose(got["hpp"], report["reference_hpp"], rtol=1e-10)
    np.testing.assert_allclose(got["block"], expect["block"], rtol=1e-9)
    np.testing.assert_allclose(got["ggn"], expect["ggn"], rtol=1e-9)
    np.testing.assert_allclose([got["alignment"], got["cosine"]], [1.0, -1.0], rtol=1e-12)
    for spec in (got["vector_spec"], got["diag_spec"]):  # leaves keep the params' sharding
        assert "'x'" in spec, spec
