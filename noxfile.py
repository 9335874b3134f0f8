"""nox sessions: the front door to cdat_core's checks (``nox -l`` lists them)."""

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "property", "doctest", "lint", "typecheck", "examples", "docs"]

RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
# Two workers match the CI machine's two cores; override with e.g. `nox -s tests -- -n 0`.
XDIST = ["-n", os.environ.get("CDAT_TEST_WORKERS", "2")]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the example-based tests in tests/ (the lab's tests need the lab extra)."""
    session.install("-e", ".[test,lab]")
    session.run("pytest", "tests", *XDIST, *session.posargs)


@nox.session
def property(session: nox.Session) -> None:
    """Run the hypothesis property tests in property_tests/ (profile: CDAT_HYPOTHESIS_PROFILE)."""
    session.install("-e", ".[test]")
    session.run("pytest", "property_tests", *XDIST, *session.posargs)


@nox.session
def doctest(session: nox.Session) -> None:
    """Run every docstring example in cdat_core and the README."""
    session.install("-e", ".[test,lab]")
    session.run(
        "pytest",
        "--doctest-modules",
        "cdat_core",
        "--doctest-glob=README.md",
        "README.md",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff (lint and format check)."""
    session.install(RUFF)
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the cdat_core package with mypy."""
    session.install("-e", ".", MYPY)
    session.run("mypy", "cdat_core", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every script in examples/ in its --quick mode (each under 30 s on two cores)."""
    session.install("-e", ".[test,lab]")
    for script in sorted(Path("examples").glob("*.py")):
        session.run("python", str(script), "--quick", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (Sphinx) into build/docs/html, warnings as errors."""
    session.install("-e", ".[docs]")
    # -E: read every page again, so a warning is never hidden by an earlier build's cache.
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-E",
        "-b",
        "html",
        "docs/site",
        "build/docs/html",
        *session.posargs,
    )


@nox.session(default=False)
def benchmarks(session: nox.Session) -> None:
    """Run the pytest-benchmark suites in benchmarks/ (slow; not part of the default run)."""
    session.install("-e", ".[test,lab,bench]")
    session.run("pytest", "benchmarks", "-p", "no:xdist", *session.posargs)


@nox.session(default=False)
def verify(session: nox.Session) -> None:
    """Reproduce the paper's findings: run `cdat-core verify` (add --quick for 1 minute)."""
    session.install("-e", ".[lab]")
    # --overwrite: rerunning the session replaces the previous report in cdat-core-report/.
    session.run("cdat-core", "verify", "--overwrite", *session.posargs)
