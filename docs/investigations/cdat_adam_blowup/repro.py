"""Task 1: reproduce the CDAT+Adam blow-up on the ReLU+CE digits MLP with the library itself.

    python repro.py            # 5 seeds x 2 inits x 200 steps + first-steps log of seed 0 (and 3)
    python repro.py 1.0        # the same with the prototype safeguard model_check=1.0

Uses the public API only: optax.chain(optax.adam(1.0), cc.scale_by_cdat(2.0, ema_decay=0.9))
(= cc.cdat(optax.adam(1.0), sigma=2.0, ema_decay=0.9)), split in two so the Adam direction u
can be logged. Per step it logs f(w_t), slope g.u, curvature u'Hu, eta, the quadratic model
q(eta) = f + eta*slope + eta^2/2*curv, the actual f(w_t + eta u) (= f(w_{t+1})), |u|, |w|,
|eta u|/|w|, the EMA numerator/denominator, and the largest grid eta with f(w+eta u) <= f(w)
(the "true edge" along u).
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import cdat_core as cc
from cdat_variants import scale_by_cdat_x
from common import accuracy, data, init_params, make_loss, tree_norm

X, Y = data()
LOSS = make_loss(X, Y, "relu", "ce")
ETAS = jnp.asarray(np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 81)]), jnp.float32)


def make(sigma=2.0, ema=0.9, base=None, check=None):
    base = base or optax.adam(1.0)
    if check is None:
        cd = cc.scale_by_cdat(sigma, ema_decay=ema)
    else:  # the prototype safeguard (cdat_variants.py), kappa = check
        cd = scale_by_cdat_x(sigma, ema_decay=ema, model_check=check)

    @functools.partial(jax.jit, static_argnums=3)
    def step(w, bs, cs, scan_line=True):
        g = jax.grad(LOSS)(w)
        u, bs = base.update(g, bs, w)
        upd, cs = cd.update(u, cs, w, value_fn=LOSS)
        w_new = optax.apply_updates(w, upd)
        # along-line scan: f(w + eta u) for the grid, to locate the true edge
        if scan_line:
            line = jax.vmap(lambda e: LOSS(jax.tree.map(lambda a, b: a + e * b, w, u)))(ETAS)
        else:
            line = jnp.zeros_like(ETAS)
        f0 = line[0]
        ok = line <= f0
        true_edge = jnp.max(jnp.where(ok, ETAS, 0.0))
        # true minimiser on grid
        argmin_eta = ETAS[jnp.argmin(line)]
        info = dict(
            f=cs.value,
            slope=cs.slope,
            curv=cs.curvature,
            eta=cs.learning_rate,
            num=cs.numerator,
            den=cs.denominator,
            unorm=tree_norm(u),
            wnorm=tree_norm(w),
            gnorm=tree_norm(g),
            f_next=LOSS(w_new),
            proposed=getattr(cs, "proposed", cs.learning_rate),
            backtracks=getattr(cs, "backtracks", jnp.zeros((), jnp.int32)),
            true_edge=true_edge,
            argmin_eta=argmin_eta,
            min_line=jnp.min(line),
        )
        return w_new, bs, cs, info

    return base, cd, step


def run(seed, init, steps=200, log=0, sigma=2.0, ema=0.9, base=None, check=None):
    base, cd, step = make(sigma, ema, base, check)
    w = init_params(seed, init)
    bs, cs = base.init(w), cd.init(w)
    rows = []
    for t in range(steps):
        w, bs, cs, info = step(w, bs, cs, t < log)
        if t < log:
            rows.append({k: float(v) for k, v in info.items()})
    return rows, float(LOSS(w)), float(accuracy(w, X, Y))


def print_rows(rows, title):
    print(f"\n### {title}")
    print(
        "| t | f(w_t) | slope gᵀu | curv uᵀHu | η_t | q(η_t) | f(w_t+η_t u) | ‖u‖ | ‖w‖ |"
        " η‖u‖/‖w‖ | ñ | d̃ | raw σn/d | true edge η | argmin η (min f) | proposed η | backtracks |"
    )
    print("|" + "---|" * 17)
    for t, r in enumerate(rows):
        q = r["f"] + r["eta"] * r["slope"] + 0.5 * r["eta"] ** 2 * r["curv"]
        raw = 2 * max(-r["slope"], 0) / abs(r["curv"]) if r["curv"] != 0 else float("nan")
        print(
            f"| {t} | {r['f']:.4g} | {r['slope']:.4g} | {r['curv']:.4g} | {r['eta']:.4g} | "
            f"{q:.4g} | {r['f_next']:.4g} | {r['unorm']:.4g} | {r['wnorm']:.4g} | "
            f"{r['eta'] * r['unorm'] / r['wnorm']:.3g} | {r['num']:.4g} | {r['den']:.4g} | "
            f"{raw:.4g} | {r['true_edge']:.3g} | {r['argmin_eta']:.3g} ({r['min_line']:.3g}) | "
            f"{r['proposed']:.4g} | {r['backtracks']:.0f} |"
        )


if __name__ == "__main__":
    # python repro.py            -> library cc.scale_by_cdat (paper-exact)
    # python repro.py 1.0        -> prototype with model_check kappa=1.0
    check = float(sys.argv[1]) if len(sys.argv) > 1 else None
    seeds = range(5)
    nlog = 10
    for init in ("torch", "he"):
        accs, losses = [], []
        for s in seeds:
            rows, loss, acc = run(s, init, 200, log=nlog if s in (0, 3) else 0, check=check)
            accs.append(acc)
            losses.append(loss)
            if rows:
                print_rows(rows, f"init={init} seed={s} adam(1.0)+CDAT σ=2 β=0.9 check={check}")
        print(f"\ninit={init}: final acc {np.round(accs, 3).tolist()} loss {np.round(losses, 3).tolist()}")
    sys.stdout.flush()
