"""Task 1 (cause): anatomy of the very first CDAT step, before any EMA can matter.

    python step0.py

At w_0 (5 seeds x {torch, he} init, ReLU MLP + CE on digits) and the first direction u of
Adam (= -g/(|g|+1e-8), i.e. -sign(g), since m_hat = g and sqrt(v_hat) = |g| at step 1) and of
SGD (u = -g), with phi(eta) = f(w_0 + eta u):
  phi'(0) (slope), phi''(0) (curvature uᵀHu), its Gauss-Newton part (Ju)ᵀ∇²ℓ(Ju) and the
  remainder (second derivatives of the network), phi'''(0),
  eta_oe = 2 n/d (the library's step 0 with any ema_decay, since the EMA bias cancels),
  the true edge max{eta: phi(eta) <= phi(0)} on a fine log grid, phi(eta_oe),
  the fraction of hidden ReLU pre-activations (over all 1797 samples) whose sign flips
  between w_0 and w_0 + eta_oe u, the relative step eta_oe |u| / |w|, and the largest
  per-coordinate weight change relative to the init scale 1/sqrt(fan_in).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import cdat_core as cc
from common import SIZES, data, forward, init_params, make_loss, tree_norm

X, Y = data()
LOSS = make_loss(X, Y, "relu", "ce")
GRID = jnp.asarray(np.geomspace(1e-5, 100.0, 701), jnp.float32)


def preacts(params):
    out, h = [], X
    for w, b in params[:-1]:
        z = h @ w + b
        out.append(z)
        h = jax.nn.relu(z)
    return out


@jax.jit
def anatomy(w, u):
    phi = lambda e: LOSS(jax.tree.map(lambda a, b: a + e * b, w, u))
    d1 = lambda e: jax.jvp(phi, (e,), (1.0,))[1]
    d2 = lambda e: jax.jvp(d1, (e,), (1.0,))[1]
    d3 = lambda e: jax.jvp(d2, (e,), (1.0,))[1]
    f0, slope, curv = cc.directional_curvature(LOSS, w, u)
    gn = cc.gauss_newton_curvature(
        lambda p: forward(p, X),
        lambda z: optax.softmax_cross_entropy_with_integer_labels(z, Y).mean(),
        w,
        u,
    ).curvature
    third = d3(0.0)
    eta = cc.cdat_learning_rate(slope, curv, sigma=2.0)
    line = jax.vmap(phi)(GRID)
    edge = jnp.max(jnp.where(line <= f0, GRID, 0.0))
    w1 = jax.tree.map(lambda a, b: a + eta * b, w, u)
    flips = [jnp.mean(jnp.sign(a) != jnp.sign(b)) for a, b in zip(preacts(w), preacts(w1))]
    werr = jax.tree.map(lambda a, b: a + edge * b, w, u)
    flips_edge = [jnp.mean(jnp.sign(a) != jnp.sign(b)) for a, b in zip(preacts(w), preacts(werr))]
    return dict(
        f0=f0, slope=slope, curv=curv, gn=gn, rest=curv - gn, third=third, eta=eta,
        phi_eta=phi(eta), edge=edge, flips=jnp.mean(jnp.stack(flips)),
        flips_edge=jnp.mean(jnp.stack(flips_edge)),
        rel=eta * tree_norm(u) / tree_norm(w), unorm=tree_norm(u), wnorm=tree_norm(w),
        cubic_over_quad=jnp.abs(third) * eta / 3 / jnp.abs(curv),
    )


def first_direction(base, w):
    g = jax.grad(LOSS)(w)
    u, _ = base.update(g, base.init(w), w)
    return u


if __name__ == "__main__":
    print(
        "| init | seed | dir | f0 | slope | uᵀHu | GN part | remainder | φ'''(0) | η_oe=2n/d |"
        " φ(η_oe) | true edge | η_oe/edge | ReLU flips at η_oe | at edge | η‖u‖/‖w‖ | ‖u‖ | ‖w‖ |"
    )
    print("|" + "---|" * 18)
    for init in ("torch", "he"):
        for seed in range(5):
            w = init_params(seed, init)
            for name, base in (("adam", optax.adam(1.0)), ("sgd", optax.sgd(1.0))):
                r = {k: float(v) for k, v in anatomy(w, first_direction(base, w)).items()}
                print(
                    f"| {init} | {seed} | {name} | {r['f0']:.3f} | {r['slope']:.4g} | "
                    f"{r['curv']:.4g} | {r['gn']:.4g} | {r['rest']:.4g} | {r['third']:.3g} | "
                    f"{r['eta']:.3g} | {r['phi_eta']:.3g} | {r['edge']:.3g} | "
                    f"{r['eta'] / max(r['edge'], 1e-12):.3g} | {r['flips']:.2f} | "
                    f"{r['flips_edge']:.2f} | {r['rel']:.3g} | {r['unorm']:.3g} | {r['wnorm']:.3g} |"
                )
