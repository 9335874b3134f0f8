"""Closed-form example for the docstring/tests: a kink the curvature at w cannot see.

    python kink_example.py

f(w) = w²/2 + 100·relu(-w - 1/2)²  at w = 1, u = -f'(1) = -1: slope -1, curvature 1, so the
on-edge rule proposes eta = 2 (w -> -1, f = 25.5, from f(1) = 0.5). With max_rise kappa = 1 the
check f(w + eta u) <= f(w) + kappa*eta*n rejects 2 (25.5 > 2.5) and accepts 1 (f(0) = 0).
"""
import jax.numpy as jnp
import optax

import cdat_core as cc
from cdat_variants import scale_by_cdat_x

f = lambda w: jnp.sum(0.5 * w**2 + 100.0 * jnp.maximum(-w - 0.5, 0.0) ** 2)
w = jnp.array([1.0])
for name, tx in (("paper", cc.scale_by_cdat(2.0)), ("check k=1", scale_by_cdat_x(2.0, model_check=1.0)),
                 ("check k=1, K=1", scale_by_cdat_x(2.0, model_check=1.0, max_backtracks=1)),
                 ("paper-proto", scale_by_cdat_x(2.0))):
    s = tx.init(w)
    u = -jnp.array([1.0])
    upd, s = tx.update(u, s, w, value_fn=f)
    print(name, "eta", float(s.learning_rate), "update", upd.tolist(), "f(new)", float(f(w + upd)),
          "backtracks", int(getattr(s, "backtracks", 0)), "proposed", float(getattr(s, "proposed", s.learning_rate)))
# non-finite beyond the kink
g = lambda w: jnp.sum(jnp.where(w < -0.5, jnp.inf, 0.5 * w**2))
tx = scale_by_cdat_x(2.0, model_check=1.0)
s = tx.init(w)
upd, s = tx.update(-jnp.array([1.0]), s, w, value_fn=g)
print("inf beyond kink: eta", float(s.learning_rate), "backtracks", int(s.backtracks))
