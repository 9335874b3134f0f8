"""Test helpers shipped with cdat_core: per-dtype tolerances, test problems, hypothesis strategies.

Users can import these to property-test their own code the way cdat_core tests itself::

    from hypothesis import given
    from cdat_core import testing

    @given(testing.quadratic_problems())
    def test_my_tuner(problem):
        ...

Tolerances live here and only here. Each entry is ``(rtol, atol)`` for results computed by a
handful of reductions in that dtype; a test that needs a looser one says why where it uses it.

The deterministic builders (:func:`matrix_with_spectrum`, :func:`quadratic`, :func:`mlp`) take
a NumPy seed or generator and need only NumPy and JAX. The hypothesis strategies import
hypothesis lazily, so importing this module never requires it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "HYPOTHESIS_PROFILE_ENV",
    "MLP",
    "Quadratic",
    "SPDMatrix",
    "Tolerance",
    "assert_tree_allclose",
    "configure_strict_jax",
    "matrix_with_spectrum",
    "mlp",
    "mlp_params",
    "quadratic",
    "quadratic_problems",
    "register_hypothesis_profiles",
    "run_on_host_devices",
    "spd_matrices",
    "tolerance",
]


HYPOTHESIS_PROFILE_ENV = "CDAT_HYPOTHESIS_PROFILE"


def configure_strict_jax() -> None:
    """Make JAX strict, as cdat_core's own tests run: x64 on, rank and dtype promotion raise.

    Call it once at the top of a ``conftest.py``, before any array is created.
    """
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")


def register_hypothesis_profiles() -> str:
    """Register the hypothesis profiles ``dev`` and ``ci`` and load one; return its name.

    ``ci`` is derandomized with no example database (reproducible runs); ``dev`` draws new
    examples each run. Both have ``deadline=None``: JAX compiles on the first example. The
    profile comes from the environment variable ``CDAT_HYPOTHESIS_PROFILE``, else ``ci`` when
    ``CI`` is set, else ``dev``.
    """
    import os

    from hypothesis import HealthCheck, settings

    slow = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=slow)
    settings.register_profile(
        "ci",
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=slow,
    )
    default = "ci" if os.environ.get("CI") else "dev"
    name = os.environ.get(HYPOTHESIS_PROFILE_ENV, default)
    settings.load_profile(name)
    return name


def run_on_host_devices(code: str, num_devices: int = 8, timeout: float = 600.0) -> str:
    """Run ``code`` in a fresh Python with ``num_devices`` CPU devices; return its stdout.

    JAX fixes the device count when it starts, so multi-device (SPMD) checks run in a
    subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``. The subprocess
    inherits the environment; x64 is enabled in it. A non-zero exit raises ``AssertionError``
    carrying the subprocess's stderr, so a failing check fails the calling test.
    """
    import os
    import subprocess
    import sys
    import textwrap

    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={num_devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess on {num_devices} devices exited {proc.returncode}:\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


class Tolerance(NamedTuple):
    """Relative and absolute tolerance for comparing results of one dtype."""

    rtol: float
    atol: float


#: Tolerances for results of a few reductions in each dtype. bfloat16 has 8 significant bits
#: (relative spacing 2**-8 ~ 4e-3), float16 11 bits, float32 24 bits, float64 53 bits.
TOLERANCES: dict[np.dtype, Tolerance] = {
    np.dtype(jnp.bfloat16): Tolerance(rtol=2e-2, atol=2e-2),
    np.dtype(jnp.float16): Tolerance(rtol=5e-3, atol=5e-3),
    np.dtype(jnp.float32): Tolerance(rtol=1e-5, atol=1e-6),
    np.dtype(jnp.float64): Tolerance(rtol=1e-10, atol=1e-12),
}


def tolerance(dtype: Any) -> Tolerance:
    """Return the :class:`Tolerance` for ``dtype`` (a dtype, array or scalar).

    Example:
      >>> import jax.numpy as jnp
      >>> from cdat_core import testing
      >>> testing.tolerance(jnp.float32)
      Tolerance(rtol=1e-05, atol=1e-06)

    """
    dtype = np.dtype(getattr(dtype, "dtype", dtype))
    try:
        return TOLERANCES[dtype]
    except KeyError:
        raise ValueError(f"no tolerance for dtype {dtype}; known: {list(TOLERANCES)}") from None


def assert_tree_allclose(
    actual: Any,
    desired: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    err_msg: str = "",
) -> None:
    """Assert two pytrees have the same structure and allclose leaves.

    Tolerances default to :func:`tolerance` of the lower-precision dtype of each leaf pair.

    Example:
      >>> import jax.numpy as jnp
      >>> from cdat_core import testing
      >>> testing.assert_tree_allclose({"a": jnp.ones(2)}, {"a": jnp.ones(2) + 1e-7})

    """
    s1, s2 = jax.tree.structure(actual), jax.tree.structure(desired)
    if s1 != s2:  # type: ignore[operator]  # jaxlib stubs lack __ne__
        raise AssertionError(f"pytree structures differ:\n  {s1}\n  {s2}\n{err_msg}")
    for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired), strict=True):
        a_np, d_np = np.asarray(a), np.asarray(d)
        dtypes = [np.dtype(jnp.result_type(x)) for x in (a, d)]
        loosest = max((tolerance(t) for t in dtypes if t in TOLERANCES), default=None)
        tol = loosest or Tolerance(0.0, 0.0)
        np.testing.assert_allclose(
            a_np.astype(np.float64),
            d_np.astype(np.float64),
            rtol=tol.rtol if rtol is None else rtol,
            atol=tol.atol if atol is None else atol,
            err_msg=err_msg,
        )


# --------------------------------------------------------------------------------------------
# Deterministic problems
# --------------------------------------------------------------------------------------------


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
    """``n`` eigenvalues log-spaced from ``top`` down to ``top / condition_number``."""
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


# --------------------------------------------------------------------------------------------
# Hypothesis strategies (hypothesis is imported lazily)
# --------------------------------------------------------------------------------------------


def _st() -> Any:
    try:
        from hypothesis import strategies
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "cdat_core.testing strategies need hypothesis: pip install 'cdat-core[test]'"
        ) from err
    return strategies


def spd_matrices(
    min_size: int = 2,
    max_size: int = 8,
    *,
    condition_number: float | tuple[float, float] = (1.0, 1e3),
    top: float | tuple[float, float] = (1e-1, 1e2),
    spectrum: Sequence[float] | None = None,
) -> Any:
    """Strategy for :class:`SPDMatrix` with a chosen spectrum or condition number.

    With ``spectrum`` the eigenvalues are exactly those (only the basis is drawn). Otherwise
    the size, the top eigenvalue and the condition number are drawn from the given ranges (a
    number fixes them) and the other eigenvalues lie log-uniformly between; the top
    eigenvalue is kept simple (a gap of at least 10% to the next, when the condition number is
    at least 1.1) so eigenvector identities are well posed.

    Example:
      >>> from hypothesis import given, settings
      >>> from cdat_core import testing
      >>> @settings(max_examples=10, deadline=None)
      ... @given(testing.spd_matrices(condition_number=100.0))
      ... def check(m):
      ...     assert m.eigenvalues[0] / m.eigenvalues[-1] <= 100.0 * (1 + 1e-9)
      >>> check()

    """
    st = _st()

    def as_range(x: float | tuple[float, float]) -> tuple[float, float]:
        if isinstance(x, tuple):
            return float(x[0]), float(x[1])
        return float(x), float(x)

    if spectrum is not None:
        eig = np.asarray(spectrum, np.float64)
        return st.integers(0, 2**32 - 1).map(lambda seed: matrix_with_spectrum(eig, seed))

    kappa_lo, kappa_hi = as_range(condition_number)
    top_lo, top_hi = as_range(top)

    @st.composite
    def draw(draw_: Any) -> SPDMatrix:
        n = draw_(st.integers(min_size, max_size))
        log_kappa = draw_(st.floats(np.log10(kappa_lo), np.log10(kappa_hi)))
        log_top = draw_(st.floats(np.log10(top_lo), np.log10(top_hi)))
        seed = draw_(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        lam = 10.0**log_top
        smallest = lam / 10.0**log_kappa
        # A 10% gap below the top eigenvalue when the condition number allows one.
        second = max(smallest, lam / 1.1)
        others = np.exp(rng.uniform(np.log(smallest), np.log(second), size=n - 1))
        if n > 1:
            others[-1] = smallest
        eig = np.concatenate([[lam], others])
        return matrix_with_spectrum(eig, rng)

    return draw()


def quadratic_problems(
    min_size: int = 4,
    max_size: int = 8,
    *,
    dtype: Any = None,
    structure: str = "nested",
    **spd_kwargs: Any,
) -> Any:
    """Strategy for :class:`Quadratic` problems with pytree params over :func:`spd_matrices`.

    Example:
      >>> from hypothesis import given, settings
      >>> from cdat_core import testing
      >>> @settings(max_examples=5, deadline=None)
      ... @given(testing.quadratic_problems())
      ... def check(q):
      ...     assert q.fun(q.params).shape == ()
      >>> check()

    """
    st = _st()
    return st.tuples(spd_matrices(min_size, max_size, **spd_kwargs), st.integers(0, 2**32 - 1)).map(
        lambda ms: quadratic(ms[0], seed=ms[1], dtype=dtype, structure=structure)
    )


def mlp_params(
    *,
    min_layers: int = 1,
    max_layers: int = 3,
    max_width: int = 6,
    num_examples: int = 8,
    dtype: Any = None,
) -> Any:
    """Strategy for small :class:`MLP` problems (random depth, widths, weights and data).

    Example:
      >>> from hypothesis import given, settings
      >>> from cdat_core import testing
      >>> @settings(max_examples=3, deadline=None)
      ... @given(testing.mlp_params())
      ... def check(m):
      ...     assert m.predict(m.params, m.inputs).shape == m.targets.shape
      >>> check()

    """
    st = _st()

    @st.composite
    def draw(draw_: Any) -> MLP:
        depth = draw_(st.integers(min_layers, max_layers))
        sizes = [draw_(st.integers(1, max_width)) for _ in range(depth + 1)]
        seed = draw_(st.integers(0, 2**32 - 1))
        return mlp(tuple(sizes), num_examples, seed=seed, dtype=dtype)

    return draw()
