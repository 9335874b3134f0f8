"""cdat_core.lab.spectra: Hessian spectral densities in the verify report (issue 17)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdat_core.lab import plans, problems, spectra, verify


class LeastSquares(NamedTuple):
    params: Any
    inputs: Any
    targets: Any

    @staticmethod
    def loss(params, inputs, targets):
        return 0.5 * jnp.mean((inputs @ params - targets) ** 2)


def _least_squares(size, *, num_examples, seed):
    data = np.random.default_rng(0)
    inputs = data.standard_normal((num_examples, size[0])) * np.arange(1, size[0] + 1)
    targets = inputs @ np.ones(size[0])
    w0 = np.random.default_rng(seed).standard_normal(size[0])
    return LeastSquares(*(jnp.asarray(x, jnp.float32) for x in (w0, inputs, targets)))


@pytest.fixture
def least_squares():
    with problems.PROBLEMS.scoped():
        problems.PROBLEMS.register(
            problems.ProblemSpec("least_squares", _least_squares, lambda s: f"least squares {s[0]}")
        )
        yield


def test_densities_at_the_start_and_at_the_end_of_the_tuned_constant_and_cdat_1_2(
    least_squares, tmp_path
):
    rel = ("learning_rate",)
    sweeps = (
        plans.SweepSpec(
            "gd", "constant", ({"learning_rate": 0.5}, {"learning_rate": 1.0}), 20, rel
        ),
        plans.SweepSpec(
            "gd", "cdat", tuple({"sigma": s} for s in (1.0, 1.5, 2.0)), 20, select=False
        ),
    )
    experiments = {"gd": plans.ExperimentSpec("least_squares", (4,), 64, "gd")}
    plan = plans.Plan("spectra", experiments, sweeps, 10, 4, 1, 1, {}, seeds=2, spectra=True)
    report = verify.run_verify(plan, tmp_path, seed=0, seeds=2, progress=False)
    first = verify.seed_results(report["results"], 0)["experiments"]["gd"]
    second = verify.seed_results(report["results"], 1)["experiments"]["gd"]
    ends = {k for k, run in first["runs"].items() if "spectrum_end" in run}
    assert ends == {first["selected"]["constant"], "cdat σ=1", "cdat σ=2"}
    assert "spectrum_start" not in second  # the first seed only
    # A quadratic: its Hessian X^T X / n is the same everywhere, and 4 Lanczos steps are exact.
    problem = _least_squares((4,), num_examples=64, seed=0)
    x = np.asarray(problem.inputs, np.float64)
    eigenvalues = np.linalg.eigvalsh(x.T @ x / x.shape[0])
    for density in (first["spectrum_start"], *(first["runs"][k]["spectrum_end"] for k in ends)):
        for nodes, weights in zip(density["nodes"], density["weights"], strict=True):
            np.testing.assert_allclose(sorted(nodes), eigenvalues, rtol=2e-3)
            np.testing.assert_allclose(sum(weights), 1.0, rtol=1e-4)
        grid, dens = np.asarray(density["grid"]), np.asarray(density["density"])
        assert np.all(dens >= 0) and abs(np.trapezoid(dens, grid) - 1.0) < 0.02
    assert any(p.endswith("gd_spectrum.png") for p in report["plots"])


def test_wanted_runs():
    assert spectra.wanted("constant", {"learning_rate": 0.1}, True)
    assert not spectra.wanted("constant", {"learning_rate": 0.1}, False)
    assert spectra.wanted("cdat", {"sigma": 1.0}, False)
    assert spectra.wanted("cdat", {"sigma": 2.0}, False)
    assert not spectra.wanted("cdat", {"sigma": 2.0625}, False)
    assert not spectra.wanted("linesearch", {"c": 0.5}, False)


def test_the_density_is_deterministic_given_the_key():
    loss = LeastSquares.loss
    problem = _least_squares((4,), num_examples=16, seed=0)
    data = (problem.inputs, problem.targets)
    a = spectra.density(loss, problem.params, data, jax.random.key(1))
    b = spectra.density(loss, problem.params, data, jax.random.key(1))
    assert a == b


def test_only_the_full_budget_measures_spectra():
    assert plans.CATALOGS["full"]().spectra and not plans.CATALOGS["quick"]().spectra
