r"""Test problems for the lab, and the :data:`PROBLEMS` registry the experiments name them by.

The paper's datasets (CIFAR-10, Tiny Shakespeare, ImageNet) cannot be downloaded here; the
lab's problems use scikit-learn's digits (1797 images of 8 x 8 pixels, 10 classes), which is
bundled with scikit-learn and shows the paper's full-batch findings at CPU scale (see
``shared/PAPER.md``): a tanh MLP (:func:`digits_mlp`) and a small CNN (:func:`digits_cnn`).
:func:`quadratic` is the identity checks' quadratic with a chosen spectrum.

:data:`PROBLEMS` maps an experiment's ``model`` name to a :class:`ProblemSpec` (a builder
and a description); to add a problem, register one :class:`ProblemSpec` at the end of this
file.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cdat_core import testing
from cdat_core.lab.registry import Registry

__all__ = [
    "PROBLEMS",
    "DigitsCNN",
    "DigitsMLP",
    "ProblemSpec",
    "Quadratic",
    "digits_cnn",
    "digits_mlp",
    "quadratic",
    "subset",
]


class DigitsMLP(NamedTuple):
    r"""A tanh MLP with squared loss on the full digits data set.

    The objective is :math:`f(w) = \frac{1}{2N} \sum_{i=1}^N \|m(w, x_i) - y_i\|^2` with
    :math:`m` the MLP (tanh hidden layers, linear output), :math:`x_i \in [0, 1]^{64}` the
    pixels scaled by 1/16 and :math:`y_i` the one-hot labels.

    Attributes:
      params: list of ``{"w": (fan_in, fan_out), "b": (fan_out,)}`` layers.
      inputs: ``(N, 64)`` pixels.
      targets: ``(N, 10)`` one-hot labels.
    """

    params: Any
    inputs: jax.Array
    targets: jax.Array

    @staticmethod
    def predict(params: Any, inputs: jax.Array) -> jax.Array:
        """Outputs of the MLP (that of :class:`cdat_core.testing.MLP`): tanh hidden layers."""
        return testing.MLP.predict(params, inputs)

    @staticmethod
    def loss(params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
        """Halved mean squared error ``0.5 * mean(sum((predict - targets)**2, -1))``."""
        return testing.MLP.loss(params, inputs, targets)


def digits_mlp(
    hidden: Sequence[int] = (256, 256), *, seed: int = 0, dtype: Any = jnp.float32
) -> DigitsMLP:
    """The digits MLP ``64-hidden-10`` (default 64-256-256-10) at a LeCun-normal initialisation.

    Args:
      hidden: widths of the tanh hidden layers.
      seed: NumPy seed of the initial weights (biases start at 0).
      dtype: dtype of the params and data.

    Returns:
      :class:`DigitsMLP` with the full batch of 1797 examples.

    Example:
      >>> from cdat_core.lab import problems
      >>> p = problems.digits_mlp((16,))
      >>> p.inputs.shape, p.targets.shape, [layer["w"].shape for layer in p.params]
      ((1797, 64), (1797, 10), [(64, 16), (16, 10)])
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    inputs = np.asarray(data.data, np.float64) / 16.0
    targets = np.eye(10)[np.asarray(data.target)]
    rng = np.random.default_rng(seed)
    sizes = [inputs.shape[1], *hidden, 10]
    params = [
        {
            "w": jnp.asarray(rng.standard_normal((m, n)) / np.sqrt(m), dtype),
            "b": jnp.zeros(n, dtype),
        }
        for m, n in itertools.pairwise(sizes)
    ]
    return DigitsMLP(params, jnp.asarray(inputs, dtype), jnp.asarray(targets, dtype))


# --------------------------------------------------------------------------------------------
# Added for the verify job: a quadratic, a convolutional model on the same data, subsets.
# --------------------------------------------------------------------------------------------


class Quadratic(NamedTuple):
    r"""The quadratic :math:`f(w) = \frac12 w^\top A w` with a chosen spectrum.

    Attributes:
      params: the start :math:`w_0`, shape ``(d,)``.
      matrix: :math:`A = Q \operatorname{diag}(\lambda) Q^\top`, shape ``(d, d)``.
      eigenvalues: :math:`\lambda`, largest first.
      eigenvectors: :math:`Q` (columns), in the order of ``eigenvalues``.
    """

    params: jax.Array
    matrix: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array

    @staticmethod
    def loss(params: jax.Array, matrix: jax.Array) -> jax.Array:
        r""":math:`\frac12 w^\top A w`."""
        return 0.5 * params @ (matrix @ params)


def quadratic(
    eigenvalues: Sequence[float], *, seed: int = 0, dtype: Any = jnp.float32
) -> Quadratic:
    """A quadratic with the given Hessian spectrum in a random orthonormal basis.

    Args:
      eigenvalues: the spectrum of :math:`A` (sorted largest first in the result).
      seed: NumPy seed of the basis and of :math:`w_0` (standard normal).
      dtype: dtype of the arrays.

    Returns:
      :class:`Quadratic`.

    Example:
      >>> import numpy as np
      >>> from cdat_core.lab import problems
      >>> q = problems.quadratic([1.0, 10.0, 3.0])
      >>> np.round(np.linalg.eigvalsh(np.asarray(q.matrix, np.float64)), 4).tolist()
      [1.0, 3.0, 10.0]
    """
    rng = np.random.default_rng(seed)
    lam = np.sort(np.asarray(eigenvalues, np.float64))[::-1]
    q, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    matrix = (q * lam[None, :]) @ q.T
    return Quadratic(
        params=jnp.asarray(rng.standard_normal(lam.size), dtype),
        matrix=jnp.asarray(0.5 * (matrix + matrix.T), dtype),
        eigenvalues=jnp.asarray(lam, dtype),
        eigenvectors=jnp.asarray(q, dtype),
    )


def _conv3x3(images: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 "same" convolution as one matrix product over the 9 shifted copies (im2col).

    XLA's CPU convolution is slow for these tiny images, and slower still under ``vmap``;
    the matrix product is fast in both cases. ``images`` is NHWC, ``kernel`` HWIO.
    """
    _, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate(
        [padded[:, i : i + height, j : j + width, :] for i in range(3) for j in range(3)],
        axis=-1,
    )
    return patches @ kernel.reshape(-1, kernel.shape[-1])


class DigitsCNN(NamedTuple):
    r"""A small tanh convolutional net with squared loss on the digits images.

    Two 3x3 "same" convolutions (tanh, 2x2 average pooling each: 8x8 -> 4x4 -> 2x2) and a
    dense layer to the 10 outputs; the loss is that of :class:`DigitsMLP`. The convolutions
    are written as matrix products over shifted copies of the image (im2col).

    Attributes:
      params: ``{"conv1", "conv2": {"w": (3, 3, c_in, c_out), "b"}, "dense": {"w", "b"}}``.
      inputs: ``(N, 64)`` pixels (reshaped to 8x8x1 images inside :meth:`predict`).
      targets: ``(N, 10)`` one-hot labels.
    """

    params: Any
    inputs: jax.Array
    targets: jax.Array

    @staticmethod
    def predict(params: Any, inputs: jax.Array) -> jax.Array:
        """Outputs of the net for ``(N, 64)`` inputs."""
        h = inputs.reshape(inputs.shape[0], 8, 8, 1)
        for name in ("conv1", "conv2"):
            layer = params[name]
            h = jnp.tanh(_conv3x3(h, layer["w"]) + layer["b"][None, None, None, :])
            n, height, width, c = h.shape
            h = h.reshape(n, height // 2, 2, width // 2, 2, c).mean(axis=(2, 4))
        h = h.reshape(h.shape[0], -1)
        return h @ params["dense"]["w"] + params["dense"]["b"][None, :]

    @staticmethod
    def loss(params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
        """Halved mean squared error, as :meth:`DigitsMLP.loss`."""
        err = DigitsCNN.predict(params, inputs) - targets
        return 0.5 * jnp.mean(jnp.sum(err**2, axis=-1))


def digits_cnn(
    channels: Sequence[int] = (8, 16), *, seed: int = 0, dtype: Any = jnp.float32
) -> DigitsCNN:
    """The digits CNN (second architecture of the lab) at a LeCun-normal initialisation.

    Args:
      channels: output channels of the two convolutions.
      seed: NumPy seed of the weights (biases start at 0).
      dtype: dtype of the params and data.

    Returns:
      :class:`DigitsCNN` with the full batch of 1797 examples.

    Example:
      >>> from cdat_core.lab import problems
      >>> p = problems.digits_cnn((4, 8))
      >>> p.predict(p.params, p.inputs[:3]).shape
      (3, 10)
    """
    mlp = digits_mlp((), seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    c1, c2 = channels

    def dense(shape: tuple[int, ...]) -> dict[str, jax.Array]:
        fan_in = int(np.prod(shape[:-1]))
        w = rng.standard_normal(shape) / np.sqrt(fan_in)
        return {"w": jnp.asarray(w, dtype), "b": jnp.zeros(shape[-1], dtype)}

    params = {
        "conv1": dense((3, 3, 1, c1)),
        "conv2": dense((3, 3, c1, c2)),
        "dense": dense((4 * c2, 10)),
    }
    return DigitsCNN(params, mlp.inputs, mlp.targets)


def subset(problem: Any, num_examples: int) -> Any:
    """The first ``num_examples`` examples of a digits problem (the paper's full-batch subsets).

    Args:
      problem: a :class:`DigitsMLP` or :class:`DigitsCNN`.
      num_examples: how many examples to keep.

    Returns:
      The same problem type with ``inputs`` and ``targets`` cut.

    Example:
      >>> from cdat_core.lab import problems
      >>> problems.subset(problems.digits_mlp((8,)), 100).inputs.shape
      (100, 64)
    """
    return problem._replace(
        inputs=problem.inputs[:num_examples], targets=problem.targets[:num_examples]
    )


# --------------------------------------------------------------------------------------------
# The registry: an experiment's ``model`` name -> how to build and describe the problem.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ProblemSpec:
    """A problem the experiments can name.

    The problem built has ``loss(params, inputs, targets) -> scalar``, ``params`` (the
    initial weights), ``inputs`` and ``targets`` (whose leading axis indexes the examples).
    ``seed`` sets the initial weights only: the data is the same for every seed, so runs
    from several seeds can share it.

    Attributes:
      name: its name in :data:`PROBLEMS` (an experiment's ``model``).
      build: ``(size, *, num_examples, seed) -> problem``.
      describe: ``size -> str``, the problem in words for the report.
      size: what the experiment's ``size`` means (for ``cdat-core train --hidden``).
    """

    name: str
    build: Callable[..., Any]
    describe: Callable[[Sequence[int]], str]
    size: str = "hidden widths"


#: The problems experiments can name, by name.
PROBLEMS: Registry[ProblemSpec] = Registry("problem")


def _mlp(size: Sequence[int], *, num_examples: int, seed: int) -> DigitsMLP:
    return subset(digits_mlp(size, seed=seed), num_examples)


PROBLEMS.register(
    ProblemSpec("mlp", _mlp, lambda size: "digits MLP " + "-".join(str(n) for n in (64, *size, 10)))
)


def _cnn(size: Sequence[int], *, num_examples: int, seed: int) -> DigitsCNN:
    return subset(digits_cnn(size, seed=seed), num_examples)


PROBLEMS.register(
    ProblemSpec("cnn", _cnn, lambda size: f"digits CNN (channels {size[0]}, {size[1]})", "channels")
)
