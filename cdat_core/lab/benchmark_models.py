r"""The models the benchmarks share, and the functions whose costs they compare.

:func:`benchmark_problem` builds MLPs of depth 2, 8 and 32, a small convolutional net and a
small transformer, all in float32 with explicit dtypes (so JAX's x64 setting changes nothing)
and a softmax cross-entropy loss; :func:`curvature_methods` gives the objective and the ways to
get curvature along a direction; :func:`tuner_steps` the plain and CDAT training steps; and
:func:`measure` the XLA counts (:func:`cdat_core.lab.costs.xla_costs`) of all of them. The
models are small enough that everything compiles and runs in seconds on two CPU cores.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core import _tree
from cdat_core.curvature import directional_curvature, gauss_newton_curvature, hvp
from cdat_core.lab.costs import Costs, xla_costs
from cdat_core.transforms import cdat

__all__ = [
    "PROBLEM_NAMES",
    "Problem",
    "benchmark_problem",
    "curvature_methods",
    "measure",
    "tuner_steps",
]

PyTree = Any


#: Names accepted by :func:`benchmark_problem`, smallest first.
PROBLEM_NAMES = ("mlp2", "mlp8", "mlp32", "conv", "transformer")


class Problem(NamedTuple):
    """A model, its data and a direction, ready for :func:`curvature_methods`.

    ``loss(params, inputs, targets) == output_loss(predict(params, inputs), targets)``, a mean
    softmax cross-entropy; every array is float32 (targets int32), whatever JAX's x64 setting.

    Attributes:
      name: one of :data:`PROBLEM_NAMES`.
      params: the parameters :math:`w`.
      direction: the direction :math:`u`, random with the structure of ``params``.
      inputs: a batch of inputs.
      targets: integer class labels (or next tokens) for the batch.
      predict: ``predict(params, inputs) -> logits``.
      output_loss: ``output_loss(logits, targets) -> scalar``, convex in the logits.
    """

    name: str
    params: PyTree
    direction: PyTree
    inputs: jax.Array
    targets: jax.Array
    predict: Callable[[PyTree, jax.Array], jax.Array]
    output_loss: Callable[[jax.Array, jax.Array], jax.Array]

    def loss(self, params: PyTree, inputs: jax.Array, targets: jax.Array) -> jax.Array:
        """The objective ``output_loss(predict(params, inputs), targets)``."""
        return self.output_loss(self.predict(params, inputs), targets)

    @property
    def args(self) -> tuple[PyTree, PyTree, jax.Array, jax.Array]:
        """``(params, direction, inputs, targets)``, the arguments of every method."""
        return self.params, self.direction, self.inputs, self.targets


#: What a model builder returns: params, inputs and targets (NumPy), and ``predict``.
_Built = tuple[PyTree, np.ndarray, np.ndarray, Callable[[PyTree, jax.Array], jax.Array]]


def _cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, jnp.expand_dims(targets, -1), axis=-1)
    return -jnp.mean(picked)


def _dense(rng: np.random.Generator, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    w = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
    return {"w": jnp.asarray(w, jnp.float32), "b": jnp.zeros((fan_out,), jnp.float32)}


def _affine(layer: dict[str, jax.Array], h: jax.Array) -> jax.Array:
    return h @ layer["w"] + jnp.expand_dims(layer["b"], tuple(range(h.ndim - 1)))


def _mlp(rng: np.random.Generator, depth: int) -> _Built:
    width, batch, num_in, num_classes = 64, 128, 32, 10
    sizes = [num_in] + [width] * (depth - 1) + [num_classes]
    params = [_dense(rng, a, b) for a, b in itertools.pairwise(sizes)]
    inputs = rng.standard_normal((batch, num_in))
    targets = rng.integers(0, num_classes, batch)

    def predict(params: PyTree, x: jax.Array) -> jax.Array:
        for layer in params[:-1]:
            x = jnp.tanh(_affine(layer, x))
        return _affine(params[-1], x)

    return params, inputs, targets, predict


def _conv(rng: np.random.Generator) -> _Built:
    batch, size, channels, num_classes = 32, 16, (3, 16, 32), 10

    def kernel(c_in: int, c_out: int) -> dict[str, jax.Array]:
        w = rng.standard_normal((3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
        return {"w": jnp.asarray(w, jnp.float32), "b": jnp.zeros((c_out,), jnp.float32)}

    params = {
        "conv": [kernel(a, b) for a, b in itertools.pairwise(channels)],
        "head": _dense(rng, (size // 4) ** 2 * channels[-1], num_classes),
    }
    inputs = rng.standard_normal((batch, size, size, channels[0]))
    targets = rng.integers(0, num_classes, batch)

    def predict(params: PyTree, x: jax.Array) -> jax.Array:
        for layer in params["conv"]:
            x = jax.lax.conv_general_dilated(
                x, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = jax.nn.relu(x + layer["b"][None, None, None, :])
            n, h, w, c = x.shape
            x = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))  # 2x2 average pool
        return _affine(params["head"], x.reshape(x.shape[0], -1))

    return params, inputs, targets, predict


def _layer_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale[None, None, :]


def _transformer(rng: np.random.Generator) -> _Built:
    vocab, length, dim, heads, hidden, num_layers, batch = 64, 32, 64, 4, 128, 2, 8

    def block() -> dict[str, Any]:
        return {
            "ln1": jnp.ones((dim,), jnp.float32),
            "qkv": _dense(rng, dim, 3 * dim),
            "out": _dense(rng, dim, dim),
            "ln2": jnp.ones((dim,), jnp.float32),
            "up": _dense(rng, dim, hidden),
            "down": _dense(rng, hidden, dim),
        }

    params = {
        "embed": jnp.asarray(rng.standard_normal((vocab, dim)) * 0.5, jnp.float32),
        "pos": jnp.asarray(rng.standard_normal((length, dim)) * 0.1, jnp.float32),
        "blocks": [block() for _ in range(num_layers)],
        "ln": jnp.ones((dim,), jnp.float32),
        "unembed": _dense(rng, dim, vocab),
    }
    tokens = rng.integers(0, vocab, (batch, length + 1))
    causal = np.tril(np.ones((length, length), bool))

    def attention(p: dict[str, Any], x: jax.Array) -> jax.Array:
        n, t, _ = x.shape
        q, k, v = jnp.split(_affine(p["qkv"], x).reshape(n, t, 3 * heads, dim // heads), 3, 2)
        logits = jnp.einsum("nthd,nshd->nhts", q, k) / np.float32(np.sqrt(dim // heads))
        logits = jnp.where(causal[None, None, :t, :t], logits, np.float32(-1e9))
        mixed = jnp.einsum("nhts,nshd->nthd", jax.nn.softmax(logits, axis=-1), v)
        return _affine(p["out"], mixed.reshape(n, t, dim))

    def predict(params: PyTree, x: jax.Array) -> jax.Array:
        h = params["embed"][x] + params["pos"][None, : x.shape[1], :]
        for p in params["blocks"]:
            h = h + attention(p, _layer_norm(h, p["ln1"]))
            h = h + _affine(p["down"], jax.nn.gelu(_affine(p["up"], _layer_norm(h, p["ln2"]))))
        return _affine(params["unembed"], _layer_norm(h, params["ln"]))

    return params, tokens[:, :-1], tokens[:, 1:], predict


def benchmark_problem(name: str, seed: int = 0) -> Problem:
    """Build one of the shared benchmark models (float32) with its data and a direction.

    ``"mlp2"``, ``"mlp8"``, ``"mlp32"``: tanh MLPs of that many layers, width 64, 32 inputs,
    10 classes, batch 128. ``"conv"``: two 3x3 convolutions (16 and 32 channels, ReLU, 2x2
    average pooling) on 16x16x3 images and a dense head, batch 32. ``"transformer"``: a
    2-block pre-norm causal transformer (width 64, 4 heads, GELU MLP of width 128, vocabulary
    64), 8 sequences of 32 tokens. All are small enough that every method compiles and runs in
    seconds on two CPU cores. The direction is Gaussian with the scale of the params.

    Args:
      name: one of :data:`PROBLEM_NAMES`.
      seed: NumPy seed of the weights, data and direction.

    Returns:
      A :class:`Problem`.

    Example:
      >>> from cdat_core.lab import benchmark_models as bm
      >>> p = bm.benchmark_problem("mlp2")
      >>> p.loss(p.params, p.inputs, p.targets).dtype
      dtype('float32')

    """
    rng = np.random.default_rng(seed)
    builders: dict[str, Callable[[], _Built]] = {
        "mlp2": lambda: _mlp(rng, 2),
        "mlp8": lambda: _mlp(rng, 8),
        "mlp32": lambda: _mlp(rng, 32),
        "conv": lambda: _conv(rng),
        "transformer": lambda: _transformer(rng),
    }
    if name not in builders:
        raise ValueError(f"unknown problem {name!r}; choose one of {PROBLEM_NAMES}")
    params, inputs, targets, predict = builders[name]()
    direction = jax.tree.map(
        lambda w: jnp.asarray(rng.standard_normal(w.shape) * 0.1, jnp.float32), params
    )
    return Problem(
        name=name,
        params=params,
        direction=direction,
        inputs=jnp.asarray(inputs, jnp.float32 if inputs.dtype.kind == "f" else jnp.int32),
        targets=jnp.asarray(targets, jnp.int32),
        predict=predict,
        output_loss=_cross_entropy,
    )


def curvature_methods(
    problem: Problem, *, finite_difference_step: float = 1e-2
) -> dict[str, Callable[..., Any]]:
    r"""The functions the cost benchmarks compare, each ``fn(params, direction, inputs, targets)``.

    - ``objective``: :math:`f(w)`, the reference of every ratio;
    - ``value_and_grad``: :math:`f(w)` and :math:`\nabla f(w)` (one reverse pass);
    - ``directional_curvature``: :math:`f, \nabla f^\top u, u^\top H u` by forward over forward;
    - ``hvp_dot``: :math:`u^\top (H u)` with :func:`~cdat_core.hvp` (forward over reverse);
    - ``gauss_newton_curvature``: :math:`f, \nabla f^\top u, u^\top G u`;
    - ``finite_difference``: :math:`f`, the central differences
      :math:`(f(w + hu) - f(w - hu)) / 2h` and :math:`(f(w + hu) - 2f(w) + f(w - hu)) / h^2`
      (three objective evaluations; ``h`` is ``finite_difference_step``).

    Args:
      problem: a :class:`Problem`.
      finite_difference_step: :math:`h`.

    Returns:
      name -> function, in the order above.

    Example:
      >>> from cdat_core.lab import benchmark_models as bm
      >>> from cdat_core.lab.costs import xla_costs
      >>> p = bm.benchmark_problem("mlp2")
      >>> methods = bm.curvature_methods(p)
      >>> ratio = (xla_costs(methods["directional_curvature"], *p.args).flops
      ...          / xla_costs(methods["objective"], *p.args).flops)
      >>> 1.0 < ratio < 5.0
      True

    """
    loss, h = problem.loss, finite_difference_step

    def objective(w: PyTree, u: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        return loss(w, x, y)

    def value_and_grad(w: PyTree, u: PyTree, x: jax.Array, y: jax.Array) -> Any:
        return jax.value_and_grad(loss)(w, x, y)

    def curvature(w: PyTree, u: PyTree, x: jax.Array, y: jax.Array) -> Any:
        return directional_curvature(loss, w, u, x, y)

    def hvp_dot(w: PyTree, u: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        return _tree.vdot(u, hvp(loss, w, u, x, y))

    def gauss_newton(w: PyTree, u: PyTree, x: jax.Array, y: jax.Array) -> Any:
        return gauss_newton_curvature(
            problem.predict, lambda out: problem.output_loss(out, y), w, u, x
        )

    def finite_difference(w: PyTree, u: PyTree, x: jax.Array, y: jax.Array) -> Any:
        ahead, behind = loss(_tree.axpy(h, u, w), x, y), loss(_tree.axpy(-h, u, w), x, y)
        value = loss(w, x, y)
        return value, (ahead - behind) / (2 * h), (ahead - 2 * value + behind) / h**2

    return {
        "objective": objective,
        "value_and_grad": value_and_grad,
        "directional_curvature": curvature,
        "hvp_dot": hvp_dot,
        "gauss_newton_curvature": gauss_newton,
        "finite_difference": finite_difference,
    }


def tuner_steps(
    problem: Problem, *, learning_rate: float = 1e-2, sigma: float = 2.0
) -> dict[str, tuple[Callable[..., Any], tuple[Any, ...]]]:
    r"""Full training steps, plain and with CDAT, each ``(step, args)`` for ``step(*args)``.

    Every step is ``step(params, opt_state, inputs, targets) -> (params, opt_state, value)``:
    one ``jax.value_and_grad`` of the loss, the optimizer's update, ``optax.apply_updates``.

    - ``sgd``, ``adam``: ``optax.sgd(learning_rate)``, ``optax.adam(learning_rate)``;
    - ``sgd+cdat``, ``adam+cdat``: :func:`cdat_core.transforms.cdat` on ``optax.sgd(1.0)``,
      ``optax.adam(1.0)`` with ``sigma``, the objective passed as ``value_fn`` (its data as
      extra arguments), so value, gradient, slope and curvature are traced in one step and
      XLA may share the forward pass of the gradient with that of the curvature.

    Args:
      problem: a :class:`Problem`.
      learning_rate: the constant learning rate of the plain steps.
      sigma: :math:`\sigma` of the CDAT steps.

    Returns:
      name -> ``(step, args)``, with ``args = (params, opt_state, inputs, targets)``.

    Example:
      >>> from cdat_core.lab import benchmark_models as bm
      >>> from cdat_core.lab.costs import xla_costs
      >>> p = bm.benchmark_problem("mlp2")
      >>> steps = bm.tuner_steps(p)
      >>> plain, tuned = (xla_costs(steps[k][0], *steps[k][1]) for k in ("sgd", "sgd+cdat"))
      >>> 1.0 < tuned.flops / plain.flops < 3.0
      True

    """

    def value_fn(params: PyTree, inputs: jax.Array, targets: jax.Array) -> jax.Array:
        return problem.loss(params, inputs, targets)

    def make(opt: optax.GradientTransformation, tuned: bool) -> Callable[..., Any]:
        def step(params: PyTree, opt_state: Any, inputs: jax.Array, targets: jax.Array) -> Any:
            value, grads = jax.value_and_grad(problem.loss)(params, inputs, targets)
            if tuned:
                updates, opt_state = opt.update(
                    grads, opt_state, params, value_fn=value_fn, inputs=inputs, targets=targets
                )
            else:
                updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        return step

    optimizers: dict[str, tuple[optax.GradientTransformation, bool]] = {
        "sgd": (optax.sgd(learning_rate), False),
        "sgd+cdat": (cdat(optax.sgd(1.0), sigma), True),
        "adam": (optax.adam(learning_rate), False),
        "adam+cdat": (cdat(optax.adam(1.0), sigma), True),
    }
    return {
        name: (make(opt, tuned), (problem.params, opt.init(problem.params), *problem.args[2:]))
        for name, (opt, tuned) in optimizers.items()
    }


def measure(problem: Problem, *, steps: bool = True) -> dict[str, Costs]:
    """:class:`Costs` of every :func:`curvature_methods` entry and (with ``steps``) tuner step.

    Args:
      problem: a :class:`Problem`.
      steps: whether to include the :func:`tuner_steps` (they take most of the compile time).

    Returns:
      name -> :class:`Costs`, curvature methods first.

    Example:
      >>> from cdat_core.lab import benchmark_models as bm
      >>> table = bm.measure(bm.benchmark_problem("mlp2"), steps=False)
      >>> table["value_and_grad"].flops > table["objective"].flops
      True

    """
    out = {name: xla_costs(fn, *problem.args) for name, fn in curvature_methods(problem).items()}
    if steps:
        out.update({name: xla_costs(fn, *a) for name, (fn, a) in tuner_steps(problem).items()})
    return out
