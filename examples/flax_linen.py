"""CDAT with flax linen: a BatchNorm MLP on scikit-learn's digits, in a TrainState.

Two things differ from a plain linen loop:

- ``TrainState.apply_gradients(grads=g, **kw)`` gives ``kw`` to ``replace``, never to
  ``tx.update``, so the tuner would not get its objective:
  :func:`cdat_core.frameworks.apply_gradients` is the same step with ``value_fn`` forwarded.
- BatchNorm in training mode returns new batch statistics: the loss returns
  ``(loss, batch_stats)`` and the tuner is built with ``has_aux=True``. It uses the loss and
  drops the statistics (its trial points are not the new params); the statistics kept are the
  ones from the gradient's own ``jax.value_and_grad(..., has_aux=True)``.

Direction: gradient descent at learning rate 1, scaled by the paper's CDAT on the edge
(σ = 2, no averaging, no loss check: the paper's rule exactly).

    python examples/flax_linen.py            # 300 full-batch steps
    python examples/flax_linen.py --quick    # 40 steps, as `nox -s examples` runs it
"""

import argparse
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from sklearn.datasets import load_digits

import cdat_core as cc
from cdat_core.frameworks import apply_gradients


def digits(seed):
    """Digits features in [0, 1] and labels, shuffled, split 80 / 20 into train and test."""
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x = jnp.asarray(data.data[order] / 16.0, jnp.float32)
    y = jnp.asarray(data.target[order], jnp.int32)
    n = int(0.8 * len(y))
    return (x[:n], y[:n]), (x[n:], y[n:])


class MLP(nn.Module):
    """64 -> 128 -> 128 -> 10 MLP, Dense -> BatchNorm -> ReLU in each hidden layer."""

    @nn.compact
    def __call__(self, x, train):
        """Logits; ``train`` normalizes with the batch statistics and updates the running ones."""
        for _ in range(2):
            x = nn.Dense(128)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
        return nn.Dense(10)(x)


class TrainState(train_state.TrainState):
    """flax's TrainState with the running batch statistics."""

    batch_stats: Any


MODEL = MLP()


def loss_fn(params, x, y, batch_stats):
    """Cross-entropy in training mode, and the new batch statistics as aux."""
    logits, updates = MODEL.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, updates["batch_stats"]


@jax.jit
def train_step(state, x, y):
    """One CDAT step; the batch statistics kept are those of the gradient's forward pass."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, batch_stats), grads = grad_fn(state.params, x, y, state.batch_stats)
    state = apply_gradients(
        state, grads=grads, value_fn=loss_fn, x=x, y=y, batch_stats=state.batch_stats
    )
    return state.replace(batch_stats=batch_stats), loss


@jax.jit
def accuracy(state, x, y):
    """Fraction of correct labels, with the running statistics (inference mode)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return jnp.mean(jnp.argmax(MODEL.apply(variables, x, train=False), axis=-1) == y)


def main(argv=None):
    """Train and print the loss, CDAT's learning rate and the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 steps (CI)")
    parser.add_argument("--steps", type=int, default=None, help="number of steps (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = args.steps or (40 if args.quick else 300)

    (x, y), (x_test, y_test) = digits(args.seed)
    variables = MODEL.init(jax.random.key(args.seed), x, train=False)
    state = TrainState.create(
        apply_fn=MODEL.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=cc.cdat(optax.sgd(1.0), sigma=2.0, has_aux=True),
    )

    print(f"flax linen BatchNorm MLP, digits ({len(y)} train / {len(y_test)} test), {steps} steps")
    for step in range(steps):
        state, loss = train_step(state, x, y)
        if step % max(steps // 5, 1) == 0 or step == steps - 1:
            lr = float(optax.tree.get(state.opt_state, "learning_rate"))
            acc = float(accuracy(state, x_test, y_test))
            print(f"step {step:4d}  loss {float(loss):.4f}  lr {lr:.4g}  test acc {acc:.3f}")


if __name__ == "__main__":
    main()
