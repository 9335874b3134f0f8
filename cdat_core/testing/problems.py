"""Deterministic test problems: matrices with a chosen spectrum, quadratics and small MLPs.

Each builder takes a NumPy seed or generator and needs only NumPy and JAX:
:func:`matrix_with_spectrum` (and :func:`log_spaced_spectrum` for its eigenvalues),
:func:`quadratic` over pytree params, and :func:`mlp`, a tanh network with squared loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "MLP",
    "Quadratic",
    "SPDMatrix",
    "log_spaced_spectrum",
    "matrix_with_spectrum",
    "mlp",
    "quadratic",
]


class SPDMatrix(NamedTuple):
    """A symmetric matrix ``Q diag(eigenvalues) Qᵀ`` with its eigendecomposition.

    ``eigenvalues`` are sorted largest first; ``eigenvectors[:, i]`` belongs to
    ``eigenvalues[i]``.
    """

    matrix: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def matrix_with_spectrum(
    eigenvalues: Sequence[float] | np.ndarray, seed: int | np.random.Generator = 0
) -> SPDMatrix:
    """Symmetric float64 matrix with exactly the given eigenvalues and a random eigenbasis.

    Negative or zero eigenvalues are allowed (then the matrix is only symmetric).

    Example:
      >>> import numpy as np
      >>> from cdat_core import testing
      >>> m = testing.matrix_with_spectrum([3.0, 1.0, 0.5], seed=0)
      >>> np.allclose(np.linalg.eigvalsh(m.matrix)[::-1], [3.0, 1.0, 0.5])
      True

    """
    eig = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    n = eig.shape[0]
    q, r = np.linalg.qr(_rng(seed).standard_normal((n, n)))
    q = q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
    a = (q * eig) @ q.T
    return SPDMatrix(0.5 * (a + a.T), eig, q)


def log_spaced_spectrum(n: int, condition_number: float, top: float = 1.0) -> np.ndarray:
    """``n`` eigenvalues log-spaced from ``top`` down to ``top / condition_number``.

    Example:
      >>> from cdat_core import testing
      >>> testing.log_spaced_spectrum(3, 100.0, top=2.0).tolist()
      [2.0, 0.2, 0.02]

    """
    return top * np.logspace(0.0, -np.log10(condition_number), n)


class Quadratic(NamedTuple):
    r"""The quadratic :math:`f(w) = \tfrac12 x^\top A x + b^\top x` over pytree params.

    ``x`` is the concatenation of the leaves of ``params`` (in ``jax.tree.leaves`` order);
    ``fun(params)`` evaluates :math:`f` with float32-or-wider accumulation and returns the
    params' dtype, so bfloat16 params give a bfloat16 value computed accurately.
    """

    matrix: np.ndarray
    vector: np.ndarray
    params: Any
    fun: Callable[[Any], jax.Array]

    def flatten(self, tree: Any) -> np.ndarray:
        """Concatenate the leaves of ``tree`` into a float64 NumPy vector."""
        return np.concatenate(
            [np.asarray(x, dtype=np.float64).ravel() for x in jax.tree.leaves(tree)]
        )

    def unflatten(self, x: np.ndarray) -> Any:
        """Split a flat vector into a pytree shaped (and typed) like ``params``."""
        leaves, treedef = jax.tree.flatten(self.params)
        out, start = [], 0
        for leaf in leaves:
            size = int(np.prod(leaf.shape))
            out.append(jnp.asarray(x[start : start + size].reshape(leaf.shape), leaf.dtype))
            start += size
        return jax.tree.unflatten(treedef, out)


def _float_dtype(dtype: Any) -> Any:
    """``dtype``, or the widest float JAX has enabled (float64 under x64, else float32)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)


def _acc(dtype: Any) -> Any:
    from cdat_core._tree import accumulation_dtype

    return accumulation_dtype(dtype)


def quadratic(
    spd: SPDMatrix | np.ndarray,
    *,
    seed: int | np.random.Generator = 0,
    dtype: Any = None,
    structure: str = "nested",
) -> Quadratic:
    r"""A :class:`Quadratic` with matrix ``spd`` and random ``b`` and params.

    ``structure="nested"`` splits the parameters into ``{"a": vector, "b": {"c": matrix,
    "d": None}}``-like nesting (with a ``None`` empty subtree); ``"flat"`` uses one vector.

    Example:
      >>> from cdat_core import testing
      >>> q = testing.quadratic(testing.matrix_with_spectrum([2.0, 1.0, 1.0, 0.5]))
      >>> sorted(q.params)
      ['a', 'b']

    """
    dtype = _float_dtype(dtype)
    matrix = np.asarray(spd.matrix if isinstance(spd, SPDMatrix) else spd, np.float64)
    n = matrix.shape[0]
    rng = _rng(seed)
    b = np.asarray(rng.standard_normal(n))
    x0 = np.asarray(rng.standard_normal(n))
    params = _split(x0, structure, dtype)
    a_acc = jnp.asarray(matrix, _acc(dtype))
    b_acc = jnp.asarray(b, _acc(dtype))

    def fun(p: Any) -> jax.Array:
        leaves = jax.tree.leaves(p)
        out_dtype = jnp.result_type(leaves[0])
        acc = _acc(out_dtype)
        x = jnp.concatenate([leaf.astype(acc).ravel() for leaf in leaves])
        a_x = jnp.matmul(a_acc.astype(acc), x)
        val = 0.5 * jnp.sum(x * a_x) + jnp.sum(b_acc.astype(acc) * x)
        return val.astype(out_dtype)

    return Quadratic(matrix, b, params, fun)


def _split(x: np.ndarray, structure: str, dtype: Any) -> Any:
    n = x.shape[0]
    if structure == "flat" or n < 4:
        return jnp.asarray(x, dtype)
    if structure != "nested":
        raise ValueError(f"structure must be 'nested' or 'flat', got {structure!r}")
    k = n // 2
    rows = 2 if (n - k) % 2 == 0 else 1
    return {
        "a": jnp.asarray(x[:k], dtype),
        "b": {"c": jnp.asarray(x[k:].reshape(rows, -1), dtype), "d": None},
    }


class MLP(NamedTuple):
    """A small tanh multi-layer perceptron with squared loss on generated data."""

    params: Any
    inputs: jax.Array
    targets: jax.Array

    @staticmethod
    def predict(params: Any, inputs: jax.Array) -> jax.Array:
        """Outputs of the MLP: tanh hidden layers, linear last layer."""
        h = inputs
        for i, layer in enumerate(params):
            h = h @ layer["w"]
            h = h + jnp.expand_dims(layer["b"], tuple(range(h.ndim - 1)))
            if i < len(params) - 1:
                h = jnp.tanh(h)
        return h

    @staticmethod
    def loss(params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
        """Mean squared error, halved: ``0.5 * mean(sum((predict - targets)**2, -1))``."""
        err = MLP.predict(params, inputs) - targets
        return 0.5 * jnp.mean(jnp.sum(err**2, axis=-1))


def mlp(
    sizes: Sequence[int] = (3, 4, 2),
    num_examples: int = 8,
    *,
    seed: int | np.random.Generator = 0,
    dtype: Any = None,
) -> MLP:
    """A small :class:`MLP` with LeCun-normal weights and random inputs and targets.

    Example:
      >>> from cdat_core import testing
      >>> m = testing.mlp((3, 4, 2))
      >>> m.loss(m.params, m.inputs, m.targets).shape
      ()

    """
    dtype = _float_dtype(dtype)
    rng = _rng(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        w = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        b = 0.1 * rng.standard_normal(fan_out)
        params.append({"w": jnp.asarray(w, dtype), "b": jnp.asarray(b, dtype)})
    inputs = jnp.asarray(rng.standard_normal((num_examples, sizes[0])), dtype)
    targets = jnp.asarray(rng.standard_normal((num_examples, sizes[-1])), dtype)
    return MLP(params, inputs, targets)
