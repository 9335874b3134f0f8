"""cdat_core.lab.train: Fig. 12, 16 and 17 diagnostics (update cosine, alignment, instant gap).

Every expected value is computed here from the quadratic's closed form, not by the code under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core.lab import _train_kernels, train, tuners


def _constant(eta):
    return optax.chain(optax.sgd(1.0), tuners.scale_by_scheduled_learning_rate(eta))


def _weighted(w, a):
    return 0.5 * jnp.sum(a * w**2)


def _quadratic(a):
    a = jnp.asarray(a)
    return lambda w: 0.5 * jnp.sum(a * w**2)


def test_update_cosine_is_minus_one_past_the_edge_and_one_below_it():
    loss = _quadratic([2.0])
    # w_{t+1} = (1 - 2η) w_t: past the edge (2η = 1.5 > 1) the updates alternate in sign.
    past = train.train(
        loss, jnp.ones(1), _constant(0.75), num_steps=6, record_every=3, key=jax.random.key(0)
    )
    below = train.train(
        loss, jnp.ones(1), _constant(0.25), num_steps=6, record_every=3, key=jax.random.key(0)
    )
    np.testing.assert_allclose(past.history.update_cosine, [0, -1, -1, -1, -1, -1], atol=1e-6)
    np.testing.assert_allclose(below.history.update_cosine, [0, 1, 1, 1, 1, 1], atol=1e-6)


def test_alignment_with_the_top_eigenvector():
    loss = _quadratic([1.0, 4.0])  # top eigenvector e_2
    along_top = train.train(
        loss,
        jnp.array([0.0, 1.0]),
        _constant(0.1),
        num_steps=4,
        record_every=2,
        key=jax.random.key(0),
    )
    across = train.train(
        loss,
        jnp.array([1.0, 0.0]),
        _constant(0.1),
        num_steps=4,
        record_every=2,
        key=jax.random.key(0),
    )
    mixed = train.train(
        loss,
        jnp.array([1.0, 1.0]),
        _constant(0.1),
        num_steps=2,
        record_every=2,
        key=jax.random.key(0),
    )
    np.testing.assert_allclose(along_top.history.alignment, [1.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(across.history.alignment, [0.0, 0.0], atol=1e-4)
    # Last update from w_1 = (1 - 0.1 a) * w_0: u = -0.1 a * w_1 = -0.1 * (0.9, 2.4).
    u = np.array([0.9 * 1.0, 0.6 * 4.0])
    np.testing.assert_allclose(mixed.history.alignment, [u[1] / np.linalg.norm(u)], rtol=1e-4)


def test_alignment_uses_the_preconditioned_coordinates():
    a, p = np.array([1.0, 4.0, 9.0]), np.array([1.0, 16.0, 1.0])
    # P^{-1/2} H P^{-1/2} = diag(1, 0.25, 9): top eigenvector e_3.
    measure = _train_kernels.measure_fn(_weighted, True, 20)
    update = jnp.array([[1.0, 1.0, 1.0]])
    v0 = jnp.ones((1, 1, 3))
    out = measure(jnp.ones((1, 3)), jnp.asarray(p)[None], v0, (jnp.asarray(a),), update)
    moved = np.sqrt(p) * np.ones(3)  # P^{1/2} u
    np.testing.assert_allclose(out[1], [9.0], rtol=1e-4)
    np.testing.assert_allclose(out[4], [moved[2] / np.linalg.norm(moved)], rtol=1e-4)
    assert np.isnan(out[5]).all()  # no instant gap unless asked


def test_instant_gap_is_the_greedy_steps_extra_decrease_on_a_quadratic():
    a = np.array([1.0, 3.0, 10.0])
    w0 = jnp.array([1.0, -2.0, 0.5])
    (res,) = train.run_lanes(
        _weighted,
        [w0],
        train._kernels.Fixed(_constant(0.05)),
        [{}],
        [jax.random.key(0)],
        num_steps=4,
        record_every=2,
        data=(jnp.asarray(a),),
        instant=True,
    )
    # On a quadratic the on-edge step returns to f(w) and the greedy one lowers it by n^2/2d.
    expected = []
    w = np.asarray(w0, np.float64)
    for t in range(4):
        w = w - 0.05 * a * w
        if t % 2 == 1:
            g = a * w
            expected.append(np.sum(g**2) ** 2 / (2 * np.sum(a * g**2)))
    np.testing.assert_allclose(res.history.instant_gap, expected, rtol=1e-4)
    plain = train.train(
        lambda w: _weighted(w, jnp.asarray(a)),
        w0,
        _constant(0.05),
        num_steps=2,
        record_every=2,
        key=jax.random.key(0),
    )
    assert np.isnan(plain.history.instant_gap).all()
