"""Test helpers shipped with cdat_core: tolerances, test problems, hypothesis strategies.

Users can import these to property-test their own code the way cdat_core tests itself::

    from hypothesis import given
    from cdat_core import testing

    @given(testing.quadratic_problems())
    def test_my_tuner(problem):
        ...

Everything is used as ``testing.X``; the modules only group it:

- :mod:`~cdat_core.testing.tolerances`: per-dtype :data:`TOLERANCES`, :func:`tolerance`,
  :func:`assert_tree_allclose`.
- :mod:`~cdat_core.testing.problems`: deterministic builders taking a NumPy seed
  (:func:`matrix_with_spectrum`, :func:`log_spaced_spectrum`, :func:`quadratic`, :func:`mlp`).
- :mod:`~cdat_core.testing.strategies`: hypothesis strategies (:func:`floats` without the
  subnormals XLA flushes to zero, :func:`spd_matrices`, :func:`quadratic_problems`,
  :func:`mlp_params`); hypothesis is imported only when one is built.
- :mod:`~cdat_core.testing.config`: :func:`configure_strict_jax`,
  :func:`register_hypothesis_profiles`, :func:`run_on_host_devices`.
"""

from cdat_core.testing.config import (
    HYPOTHESIS_PROFILE_ENV,
    configure_strict_jax,
    register_hypothesis_profiles,
    run_on_host_devices,
)
from cdat_core.testing.problems import (
    MLP,
    Quadratic,
    SPDMatrix,
    log_spaced_spectrum,
    matrix_with_spectrum,
    mlp,
    quadratic,
)
from cdat_core.testing.strategies import floats, mlp_params, quadratic_problems, spd_matrices
from cdat_core.testing.tolerances import (
    TOLERANCES,
    Tolerance,
    assert_tree_allclose,
    tolerance,
)

__all__ = [
    "HYPOTHESIS_PROFILE_ENV",
    "MLP",
    "TOLERANCES",
    "Quadratic",
    "SPDMatrix",
    "Tolerance",
    "assert_tree_allclose",
    "configure_strict_jax",
    "floats",
    "log_spaced_spectrum",
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
