"""How a test session runs: strict JAX, hypothesis profiles, multi-device subprocesses.

:func:`configure_strict_jax` and :func:`register_hypothesis_profiles` are called once from a
``conftest.py``; :func:`run_on_host_devices` runs an SPMD check on ``N`` CPU devices in a
fresh Python, since JAX fixes the device count when it starts.
"""

from __future__ import annotations

import jax

__all__ = [
    "HYPOTHESIS_PROFILE_ENV",
    "configure_strict_jax",
    "register_hypothesis_profiles",
    "run_on_host_devices",
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
