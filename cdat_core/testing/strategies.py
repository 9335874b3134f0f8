"""Hypothesis strategies: floats JAX computes with exactly, SPD matrices, quadratics, MLPs.

hypothesis is imported when a strategy is built, so importing :mod:`cdat_core.testing` never
requires it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cdat_core.testing.problems import (
    MLP,
    SPDMatrix,
    matrix_with_spectrum,
    mlp,
    quadratic,
)

__all__ = ["floats", "mlp_params", "quadratic_problems", "spd_matrices"]

_WIDTHS = {16: np.float16, 32: np.float32, 64: np.float64}


def _st() -> Any:
    try:
        from hypothesis import strategies
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "cdat_core.testing strategies need hypothesis: pip install 'cdat-core[test]'"
        ) from err
    return strategies


def _inward(bound: float, dtype: Any, *, lower: bool) -> float:
    """``bound`` rounded towards the inside of the range to a normal ``dtype`` float (or 0)."""
    tiny = float(np.finfo(dtype).tiny)
    with np.errstate(over="ignore"):
        x = dtype(bound)
    if lower and float(x) < bound:
        x = np.nextafter(x, dtype(np.inf))
    if not lower and float(x) > bound:
        x = np.nextafter(x, dtype(-np.inf))
    if 0.0 < abs(float(x)) < tiny:  # a subnormal bound: move it to 0 or ±tiny, inwards
        return (0.0 if x < 0 else tiny) if lower else (-tiny if x < 0 else 0.0)
    return float(x)


def floats(min_value: float, max_value: float, *, width: int = 64) -> Any:
    """Strategy for the floats in ``[min_value, max_value]`` that JAX computes with as NumPy does.

    NaN, infinities and subnormal numbers are left out. XLA's CPU backend flushes subnormal
    inputs and results to zero (its GPU backend does in float32), so an identity that holds for
    a subnormal in NumPy fails under JAX. Zero is drawn when the range holds it. The bounds are
    rounded inwards to normal ``width``-bit floats (16, 32 or 64), so
    ``floats(0.1, 1.0, width=32)`` is valid and every draw is exact in float32.

    Only the draws are kept normal: a property whose results can underflow (a product or a
    quotient of small numbers) must also bound its ranges so that the results stay normal.

    Args:
      min_value: smallest value drawn (rounded up to a ``width``-bit normal float or 0).
      max_value: largest value drawn (rounded down likewise).
      width: bits of the float type the draws must be exact in.

    Example:
      >>> import numpy as np
      >>> from hypothesis import given, settings
      >>> from cdat_core import testing
      >>> @settings(max_examples=30, deadline=None)
      ... @given(testing.floats(0.0, 0.1, width=32))
      ... def check(x):
      ...     assert x == 0.0 or np.finfo(np.float32).tiny <= x <= 0.1
      ...     assert x == float(np.float32(x))
      >>> check()

    """
    st = _st()
    if width not in _WIDTHS:
        raise ValueError(f"width must be 16, 32 or 64, got {width!r}")
    lo = _inward(float(min_value), _WIDTHS[width], lower=True)
    hi = _inward(float(max_value), _WIDTHS[width], lower=False)
    if not lo <= hi:
        raise ValueError(
            f"no normal {width}-bit float in [min_value, max_value] = [{min_value}, {max_value}]"
        )
    return st.floats(
        lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width
    )


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
        log_kappa = draw_(floats(np.log10(kappa_lo), np.log10(kappa_hi)))
        log_top = draw_(floats(np.log10(top_lo), np.log10(top_hi)))
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
