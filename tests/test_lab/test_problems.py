"""cdat_core.lab.problems: the registry's problems, their sizes, seeds and descriptions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdat_core.lab import problems


@pytest.mark.parametrize(("name", "size"), [("mlp", (8, 4)), ("cnn", (2, 3))])
def test_registered_problems_build_a_loss_on_the_first_examples(name, size):
    p = problems.PROBLEMS[name].build(size, num_examples=40, seed=1)
    assert p.inputs.shape == (40, 64) and p.targets.shape == (40, 10)
    value = p.loss(p.params, p.inputs, p.targets)
    assert value.shape == () and bool(jnp.isfinite(value)) and float(value) > 0


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_seed_changes_the_weights_only(name):
    size = (8, 4) if name == "mlp" else (2, 3)
    a = problems.PROBLEMS[name].build(size, num_examples=30, seed=0)
    b = problems.PROBLEMS[name].build(size, num_examples=30, seed=1)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.targets, b.targets)
    wa, wb = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(p.params)]) for p in (a, b))
    assert wa.shape == wb.shape and not np.array_equal(wa, wb)


def test_descriptions():
    assert problems.PROBLEMS["mlp"].describe((32, 32)) == "digits MLP 64-32-32-10"
    assert problems.PROBLEMS["cnn"].describe((8, 16)) == "digits CNN (channels 8, 16)"


def test_the_registry_builds_the_same_problem_as_the_functions():
    p = problems.PROBLEMS["mlp"].build((8,), num_examples=20, seed=3)
    q = problems.subset(problems.digits_mlp((8,), seed=3), 20)
    for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
        np.testing.assert_array_equal(x, y)


def test_unknown_problem_raises():
    with pytest.raises(ValueError, match="unknown problem 'resnet'"):
        problems.PROBLEMS.lookup("resnet")


def test_quadratic_has_the_spectrum():
    q = problems.quadratic([1.0, 10.0, 3.0], seed=2)
    np.testing.assert_allclose(np.asarray(q.eigenvalues), [10.0, 3.0, 1.0])
    eig = np.linalg.eigvalsh(np.asarray(q.matrix, np.float64))
    np.testing.assert_allclose(eig, [1.0, 3.0, 10.0], rtol=1e-5)
