"""Per-dtype tolerances and a pytree ``allclose`` assertion.

Tolerances live here and only here. Each entry is ``(rtol, atol)`` for results computed by a
handful of reductions in that dtype; a test that needs a looser one says why where it uses it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TOLERANCES", "Tolerance", "assert_tree_allclose", "tolerance"]


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
