"""cdat_core.lab.measurements: the identity checks and model trajectories the claims read."""

import numpy as np
import pytest

from cdat_core.lab import measurements


@pytest.fixture(scope="module")
def identity():
    return measurements.identity_checks(seed=3, dim=6, num_directions=5)


def test_aligned_rates_are_two_and_one_over_the_sharpness(identity):
    lam = identity["sharpness"]
    assert identity["on_edge_aligned"] == pytest.approx(2 / lam, rel=1e-5)
    assert identity["greedy_aligned"] == pytest.approx(1 / lam, rel=1e-5)
    assert lam == pytest.approx(10.0) and identity["smallest_eigenvalue"] == pytest.approx(0.1)


def test_random_directions_stay_within_the_spectral_bounds(identity):
    eta = np.asarray(identity["on_edge_random"])
    assert eta.shape == (5,) and len(identity["model_gap_random"]) == 5
    assert np.all(eta >= 2 / identity["sharpness"] * (1 - 1e-5))
    assert np.all(eta <= 2 / identity["smallest_eigenvalue"] * (1 + 1e-5))
    assert max(identity["model_gap_random"]) <= 1e-4


def test_model_trajectories_have_the_figures_lengths():
    out = measurements.model_trajectories()
    assert {k: len(v["sharpness"]) for k, v in out.items()} == {
        "constant": 101,
        "classical": 101,
        "cdat_2": 601,
        "cdat_1.9": 601,
    }
    assert out["constant"]["learning_rate"][0] == 1.0
