r"""Prototype: scale_by_cdat with candidate safeguards (does NOT touch the repo).

With every option at its default this is the library's cc.scale_by_cdat (checked bit-for-bit
by ``python cdat_variants.py``). Options (all off by default):

- ``model_check=kappa`` (float >= 0, None = off): after the rule's eta, evaluate
  f(w + eta u) (one forward) and accept only if

      f(w + eta u) <= f(w) + kappa * eta * n_t,      n_t = max(-grad f(w)ᵀu, 0),

  i.e. the paper's Armijo criterion (1) with a *negative* constant c = -kappa: the step may
  raise the loss (on-edge steps do, slightly), but never by more than kappa times the
  first-order decrease the step was supposed to buy. Otherwise eta <- backtrack * eta, up to
  ``max_backtracks`` times; if none is accepted the step is zero. The EMAs are those of the
  paper (optionally ``feedback=True``: a shrunk step records the curvature it implies,
  d_t <- sigma * n_t / eta_accepted, in the denominator EMA).
- ``max_relative_update=rho``: eta <= rho * |w| / |u| (global norms), no extra cost.
- ``ema_warmup=True``: eta_t multiplied by (1 - beta^(t+1)) (numerator EMA without bias
  correction, denominator with it): a built-in ~1/(1-beta)-step warm-up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import cdat_core as cc
from cdat_core import _tree


class State(NamedTuple):
    learning_rate: jax.Array
    numerator: jax.Array
    denominator: jax.Array
    value: jax.Array
    slope: jax.Array
    curvature: jax.Array
    finite: jax.Array
    num_updates: jax.Array
    backtracks: jax.Array
    proposed: jax.Array  # eta before the safeguard


def scale_by_cdat_x(
    sigma=2.0,
    *,
    ema_decay=0.0,
    eps=0.0,
    max_learning_rate=float("inf"),
    model_check=None,
    backtrack=0.5,
    max_backtracks=20,
    feedback=False,
    max_relative_update=None,
    ema_warmup=False,
):
    def init_fn(params):
        z = jnp.zeros((), jnp.float32)
        return State(z, z, z, z, z, z, jnp.asarray(True), jnp.zeros((), jnp.int32),
                     jnp.zeros((), jnp.int32), z)

    def update_fn(updates, state, params=None, *, value_fn=None, **extra):
        fun = value_fn
        value, slope, curvature = (
            jnp.asarray(x).astype(jnp.float32)
            for x in cc.directional_curvature(fun, params, updates)
        )
        finite = (jnp.isfinite(value) & jnp.isfinite(slope) & jnp.isfinite(curvature)
                  & _tree.all_finite(updates))
        beta = jnp.asarray(ema_decay, jnp.float32)
        n = jnp.maximum(-jnp.where(finite, slope, 0.0), 0.0)
        d = jnp.abs(jnp.where(finite, curvature, 0.0)) + jnp.maximum(jnp.float32(eps), 0.0)
        new_n = jnp.where(finite, cc.ema(state.numerator, n, beta), state.numerator)
        new_d = jnp.where(finite, cc.ema(state.denominator, d, beta), state.denominator)
        eta = cc.cdat_learning_rate(-new_n, new_d, sigma=sigma,
                                    max_learning_rate=max_learning_rate).astype(jnp.float32)
        eta = jnp.where(finite, eta, 0.0)
        if ema_warmup:
            t = state.num_updates.astype(jnp.float32) + 1.0
            eta = eta * (1.0 - beta**t)
        if max_relative_update is not None:
            un = _tree.norm(updates)
            cap = max_relative_update * _tree.norm(params) / jnp.where(un > 0, un, 1.0)
            eta = jnp.where(un > 0, jnp.minimum(eta, cap), eta)
        proposed = eta
        k = jnp.zeros((), jnp.int32)
        if model_check is not None:
            def trial(e):
                return jnp.asarray(fun(jax.tree.map(lambda a, b: a + e * b, params, updates)),
                                   jnp.float32)

            def bad(e, f1):
                return ~(jnp.isfinite(f1) & (f1 <= value + model_check * e * n))

            def cond(c):
                k, e, f1 = c
                return (k < max_backtracks) & bad(e, f1) & (e > 0)

            def body(c):
                k, e, _ = c
                e = e * backtrack
                return k + 1, e, trial(e)

            k, eta, f1 = jax.lax.while_loop(cond, body, (k, eta, trial(eta)))
            eta = jnp.where(bad(eta, f1), 0.0, eta)
            if feedback:
                shrunk = (k > 0) & (eta > 0)
                d_implied = sigma * n / jnp.where(eta > 0, eta, 1.0)
                d_fb = jnp.where(shrunk, jnp.maximum(d_implied, d), d)
                new_d = jnp.where(finite, cc.ema(state.denominator, d_fb, beta), state.denominator)
        new_state = State(eta, new_n, new_d, value, slope, curvature, finite,
                          state.num_updates + 1, k, proposed)
        safe = jnp.where(finite, eta, 0.0)
        out = jax.tree.map(lambda u: jnp.where(finite, safe * u, jnp.zeros_like(u)), updates)
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _step(w, bs, cs, cd, base, loss):
    g = jax.grad(loss)(w)
    u, bs = base.update(g, bs, w)
    upd, cs = cd.update(u, cs, w, value_fn=loss)
    return optax.apply_updates(w, upd), bs, cs


if __name__ == "__main__":
    # bit-for-bit check against the library with every option off
    from common import data, init_params, make_loss

    X, Y = data()
    loss = make_loss(X, Y, "relu", "ce")
    for seed in (0, 3):
        w0 = init_params(seed, "torch")
        outs = []
        for cd in (cc.scale_by_cdat(2.0, ema_decay=0.9), scale_by_cdat_x(2.0, ema_decay=0.9)):
            base = optax.adam(1.0)
            w, bs, cs = w0, base.init(w0), cd.init(w0)
            step = jax.jit(lambda w, bs, cs, cd=cd, base=base: _step(w, bs, cs, cd, base, loss))
            etas = []
            for _ in range(15):
                w, bs, cs = step(w, bs, cs)
                etas.append(float(cs.learning_rate))
            outs.append((etas, w))

        same = outs[0][0] == outs[1][0] and all(
            bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(outs[0][1]),
                                                         jax.tree.leaves(outs[1][1])))
        print(f"seed {seed}: identical to cc.scale_by_cdat over 15 steps: {same}")

