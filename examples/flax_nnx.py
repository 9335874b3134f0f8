"""CDAT with flax.nnx: an MLP with dropout on scikit-learn's digits, through nnx.Optimizer.

The tuner needs the objective as ``value_fn(params, **kw)`` over the state ``nnx.Optimizer``
updates; :func:`cdat_core.frameworks.nnx_value_fn` builds it from the module and the loss,
with the dropout mask of the gradient's own forward pass. Direction: Adam at learning rate 1,
scaled by CDAT on the edge (σ = 2) with the loss check ``max_rise=1.0`` the README
recommends for Adam/RMSProp directions.

    python examples/flax_nnx.py            # 300 full-batch steps
    python examples/flax_nnx.py --quick    # 40 steps, as `nox -s examples` runs it
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import cdat_core as cc
from cdat_core.frameworks import nnx_value_fn


def digits(seed):
    """Digits features in [0, 1] and labels, shuffled, split 80 / 20 into train and test."""
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x = jnp.asarray(data.data[order] / 16.0, jnp.float32)
    y = jnp.asarray(data.target[order], jnp.int32)
    n = int(0.8 * len(y))
    return (x[:n], y[:n]), (x[n:], y[n:])


class MLP(nnx.Module):
    """64 -> 128 -> 128 -> 10 ReLU MLP with dropout after each hidden layer."""

    def __init__(self, rngs, dropout=0.1):
        self.layers = nnx.List([nnx.Linear(64, 128, rngs=rngs), nnx.Linear(128, 128, rngs=rngs)])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        """Logits of a batch of flattened images."""
        for layer in self.layers:
            x = self.dropout(jax.nn.relu(layer(x)))
        return self.out(x)


def loss_fn(model, x, y):
    """Mean softmax cross-entropy."""
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    """One CDAT step; the dropout mask is drawn once and shared by the gradient and the tuner."""
    value_fn = nnx_value_fn(model, loss_fn)  # before nnx.grad, which advances the Rngs
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, value_fn=value_fn, x=x, y=y)
    return loss


@nnx.jit
def accuracy(model, x, y):
    """Fraction of correct labels."""
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def main(argv=None):
    """Train and print the loss, CDAT's learning rate and the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 steps (CI)")
    parser.add_argument("--steps", type=int, default=None, help="number of steps (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = args.steps or (40 if args.quick else 300)

    (x, y), (x_test, y_test) = digits(args.seed)
    model = MLP(nnx.Rngs(params=args.seed, dropout=args.seed + 1))
    tx = cc.cdat(optax.adam(1.0), sigma=2.0, ema_decay=0.9, max_rise=1.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    print(f"flax.nnx MLP, digits ({len(y)} train / {len(y_test)} test), {steps} steps")
    for step in range(steps):
        loss = train_step(model, optimizer, x, y)
        if step % max(steps // 5, 1) == 0 or step == steps - 1:
            state = nnx.as_pure(optimizer.opt_state)  # the tuner's state as plain arrays
            lr = float(optax.tree.get(state, "learning_rate"))
            model.eval()  # no dropout
            acc = float(accuracy(model, x_test, y_test))
            model.train()
            print(f"step {step:4d}  loss {float(loss):.4f}  lr {lr:.4g}  test acc {acc:.3f}")


if __name__ == "__main__":
    main()
