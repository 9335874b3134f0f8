"""Shared pieces for the CDAT-recipe investigation (issue 13, first bullet).

Data: scikit-learn's bundled digits (1797 x 64), features / 16, full batch.
Model: plain-JAX MLP 64-128-128-10 (ReLU or tanh), params = list of (W, b).
Inits:
  - "torch": PyTorch/equinox default Linear init, W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  - "he":    W ~ N(0, 2/fan_in), b = 0.
Losses: softmax cross-entropy ("ce") or squared loss on one-hot targets ("sq", 0.5*mean sum).
Everything is deterministic given the integer seed (jax.random.PRNGKey(seed)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

SIZES = (64, 128, 128, 10)


def data():
    d = load_digits()
    x = jnp.asarray(d.data / 16.0, jnp.float32)
    y = jnp.asarray(d.target, jnp.int32)
    return x, y


def init_params(seed: int, init: str = "torch", sizes=SIZES):
    key = jax.random.PRNGKey(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, kw, kb = jax.random.split(key, 3)
        if init == "torch":
            lim = 1.0 / np.sqrt(fan_in)
            w = jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -lim, lim)
            b = jax.random.uniform(kb, (fan_out,), jnp.float32, -lim, lim)
        elif init == "he":
            w = jax.random.normal(kw, (fan_in, fan_out), jnp.float32) * np.sqrt(2.0 / fan_in)
            b = jnp.zeros((fan_out,), jnp.float32)
        else:
            raise ValueError(init)
        params.append((w, b))
    return params


def forward(params, x, act="relu"):
    f = jax.nn.relu if act == "relu" else jnp.tanh
    h = x
    for w, b in params[:-1]:
        h = f(h @ w + b)
    w, b = params[-1]
    return h @ w + b


def make_loss(x, y, act="relu", loss="ce"):
    def fn(params):
        logits = forward(params, x, act)
        if loss == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        onehot = jax.nn.one_hot(y, 10)
        return 0.5 * jnp.mean(jnp.sum((logits - onehot) ** 2, axis=-1))

    return fn


def accuracy(params, x, y, act="relu"):
    return jnp.mean(jnp.argmax(forward(params, x, act), -1) == y)


def tree_norm(t):
    return jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree.leaves(t)))
