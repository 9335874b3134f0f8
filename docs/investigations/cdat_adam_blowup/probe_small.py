"""Is there a CPU-cheap config for a regression test of the safeguard?

    python probe_small.py

ReLU MLP 64-H-H-10, torch init, softmax CE, first N digits, full batch, Adam(1)+CDAT σ=2 β=0.9,
paper-exact vs model_check=1 (prototype), seeds 0..9, STEPS steps: prints the loss after the
first step / f0, the max loss over the run, and the final train accuracy per seed.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

from cdat_variants import scale_by_cdat_x
from common import accuracy, data, init_params, make_loss

X, Y = data()


def go(n, h, steps, check):
    x, y = X[:n], Y[:n]
    loss = make_loss(x, y, "relu", "ce")
    base = optax.adam(1.0)
    tuner = scale_by_cdat_x(2.0, ema_decay=0.9, model_check=check)

    def run(w0):
        def body(c, _):
            w, bs, cs = c
            f, g = jax.value_and_grad(loss)(w)
            u, bs = base.update(g, bs, w)
            upd, cs = tuner.update(u, cs, w, value_fn=loss)
            return (optax.apply_updates(w, upd), bs, cs), f

        (w, _, _), fs = jax.lax.scan(body, (w0, base.init(w0), tuner.init(w0)), None, length=steps)
        return fs[1] / fs[0], jnp.max(fs), accuracy(w, x, y)

    ws = [init_params(s, "torch", (64, h, h, 10)) for s in range(10)]
    w0 = jax.tree.map(lambda *a: jnp.stack(a), *ws)
    return jax.jit(jax.vmap(run))(w0)


if __name__ == "__main__":
    for n, h, steps in ((512, 32, 100), (512, 64, 100), (1797, 64, 100)):
        for check in (None, 1.0):
            t = time.time()
            r1, fmax, acc = go(n, h, steps, check)
            print(f"n={n} H={h} steps={steps} check={check} ({time.time() - t:.1f}s)")
            print("  f1/f0 ", [round(float(v), 2) for v in r1])
            print("  max f ", [round(float(v), 3) for v in fmax])
            print("  acc   ", [round(float(v), 2) for v in acc])
