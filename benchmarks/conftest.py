"""Benchmarks: JAX's default float32 (x64 stays off), run only when asked for.

``pytest benchmarks/`` (or ``nox -s benchmarks``) runs them; the default test run never
collects this folder (``testpaths`` in pyproject.toml). Every item here gets the
``benchmark`` marker, and figures that a suite records with the ``bench_report`` fixture are
printed in a "benchmark figures" section at the end of the run.
"""

import pytest
import pytest_benchmark  # noqa: F401  (fail loudly, never skip, when the plugin is missing)

_REPORT: list[str] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "benchmarks" in item.path.parts:
            item.add_marker(pytest.mark.benchmark)


@pytest.fixture(scope="session")
def bench_report():
    """A list of lines printed after the run (matvec counts, accuracies, time ratios)."""
    return _REPORT


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("benchmark figures")
        for line in _REPORT:
            terminalreporter.write_line(line)
