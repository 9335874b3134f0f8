"""Every tuner's jitted step on params sharded over an 8-device mesh equals the 1-device step."""

import json

from cdat_core import testing

CODE = r"""
import json
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import cdat_core as cc

tuners = {
    "cdat_sgd": cc.cdat(optax.sgd(1.0), sigma=2.0),
    "cdat_adam_ema": cc.cdat(optax.adam(1.0), sigma=2.0, ema_decay=0.9),
    "linesearch": optax.chain(optax.sgd(1.0), cc.scale_by_linesearch(c=1e-4)),
    "polyak": optax.chain(optax.sgd(1.0), cc.scale_by_polyak()),
    "hypergradient": optax.chain(optax.sgd(1.0), cc.scale_by_hypergradient(0.1)),
    "sharpness": optax.chain(optax.sgd(1.0), cc.scale_by_sharpness(num_iters=6)),
}
k = jax.random.split(jax.random.key(0), 3)
params = {"w": jax.random.normal(k[0], (16, 4)), "b": jax.random.normal(k[1], (16,))}
x = jax.random.normal(k[2], (16, 4))

def loss(p, x):  # elementwise then reduced: no contraction over a sharded axis
    return jnp.mean(jnp.tanh(p["w"] * x) ** 2) + jnp.mean(jnp.cosh(0.3 * p["b"]))

def run(opt, p, x):
    def step(p, s):
        value, grad = jax.value_and_grad(loss)(p, x)
        u, s = opt.update(grad, s, p, value_fn=loss, x=x, value=value, grad=grad)
        return optax.apply_updates(p, u), s
    step = jax.jit(step)
    s = opt.init(p)
    for _ in range(3):
        p, s = step(p, s)
    return p, optax.tree.get(s, "learning_rate")

report = {}
for mode, types in [("explicit", (AxisType.Explicit,)), ("auto", (AxisType.Auto,))]:
    mesh = jax.make_mesh((8,), ("x",), axis_types=types)
    for name, opt in tuners.items():
        ref_p, ref_lr = run(opt, params, x)
        with jax.set_mesh(mesh):
            put = lambda a: jax.device_put(a, NamedSharding(mesh, P("x")))
            p, lr = run(opt, jax.tree.map(put, params), put(x))
        err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_p)))
        report[f"{mode}/{name}"] = {"param_err": err, "lr": float(lr), "ref_lr": float(ref_lr),
                                    "devices": len(p["w"].sharding.device_set)}
print(json.dumps(report))
"""


def test_sharded_steps_match_single_device():
    report = json.loads(testing.run_on_host_devices(CODE).strip().splitlines()[-1])
    assert len(report) == 12
    for name, r in report.items():
        assert r["devices"] == 8, name
        assert r["param_err"] <= 1e-5, (name, r)
        assert abs(r["lr"] - r["ref_lr"]) <= 1e-5 * max(1.0, abs(r["ref_lr"])), (name, r)
        assert r["lr"] > 0, (name, r)
