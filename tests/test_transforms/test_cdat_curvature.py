"""scale_by_cdat(curvature=..., every=...): each estimator against the exact u^T H u.

Quadratics: parabolic, forward-edge and Gauss-Newton (on a linear model) equal u^T A u up to
rounding, the lagged parabola equals the previous direction's. Cubics: the parabola's and the
edge's curvatures are their Taylor closed forms phi'' + phi''' tau / 3. A tanh MLP: the
parabola at a small probe is within its stated first-order error, Gauss-Newton equals
u^T J^T J u / N from a dense Jacobian. every=k: the Rayleigh quotient of the last refresh is
reused, and the objective is evaluated only at refreshes (counted at run time).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import cdat_core as cc
from cdat_core import testing


def _quadratic(seed=0, n=5):
    spd = testing.matrix_with_spectrum(testing.log_spaced_spectrum(n, 20.0, top=4.0), seed)
    A = jnp.asarray(spd.matrix)
    b = jnp.asarray(np.random.default_rng(seed).standard_normal(n))
    w0 = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(n))
    return A, b, w0, lambda w: 0.5 * w @ A @ w + b @ w


def _least_squares(seed=0):
    """f = ||Xw - y||^2 / 2 with X of full column rank: A = X^T X, split for Gauss-Newton."""
    rng = np.random.default_rng(seed)
    X, y = jnp.asarray(rng.standard_normal((7, 5))), jnp.asarray(rng.standard_normal(7))
    gn = cc.GaussNewtonCurvature(lambda w: X @ w, lambda out: 0.5 * jnp.sum((out - y) ** 2))
    return X.T @ X, X.T @ (-y), gn


def _with_previous_rate(state, eta):
    """The chain's state as if the previous update had taken learning rate ``eta``."""
    inner = state[1]
    return (state[0], inner._replace(learning_rate=jnp.asarray(eta, inner.learning_rate.dtype)))


def _step(opt, loss, w, state, **kw):
    value, grad = jax.value_and_grad(loss)(w)
    updates, state = opt.update(grad, state, w, value_fn=loss, value=value, grad=grad, **kw)
    return optax.apply_updates(w, updates), state


def _stepper(opt, loss):
    """``_step`` jitted once, for the loops (eagerly, every while_loop would recompile)."""
    return jax.jit(lambda w, state: _step(opt, loss, w, state))


@pytest.mark.parametrize("curvature", ["parabolic", "forward_edge", "gauss_newton"])
@pytest.mark.parametrize("previous", [None, 0.05, 3.0])
def test_estimate_is_u_A_u_on_a_quadratic(curvature, previous):
    A, b, w0, loss = _quadratic(seed=2)
    if curvature == "gauss_newton":
        A, b, curvature = _least_squares(seed=3)
        loss = lambda w: 0.5 * w @ A @ w + b @ w  # noqa: E731 (equal up to a constant)
    opt = cc.cdat(optax.sgd(1.0), sigma=2.0, curvature=curvature)
    state = opt.init(w0)
    if previous is not None:  # probe at the previous rate (None: the initial_step fallback)
        state = _with_previous_rate(state, previous)
    _, state = _step(opt, loss, w0, state)
    g = A @ w0 + b
    np.testing.assert_allclose(state[1].curvature, g @ A @ g, rtol=1e-10)
    np.testing.assert_allclose(state[1].slope, -(g @ g), rtol=1e-12)
    assert bool(state[1].finite) and int(state[1].num_refreshes) == 1


def test_lagged_is_the_previous_directions_curvature_on_a_quadratic():
    A, b, w, loss = _quadratic(seed=4)
    opt = cc.cdat(optax.sgd(1.0), sigma=1.5, curvature="lagged")
    state = opt.init(w)
    step = _stepper(opt, loss)
    previous = None
    for t in range(4):
        g = A @ w + b
        w_next, state = step(w, state)
        inner = state[1]
        if t == 0:  # no previous step: the parabolic probe, exact on a quadratic
            np.testing.assert_allclose(inner.curvature, g @ A @ g, rtol=1e-10)
            assert int(inner.num_probes) == 1
        else:  # u_{t-1}^T A u_{t-1} / |u_{t-1}|^2, times |u_t|^2; no forward pass
            expected = (previous @ A @ previous) / (previous @ previous) * (g @ g)
            np.testing.assert_allclose(inner.curvature, expected, rtol=1e-9)
            assert int(inner.num_probes) == 0
        previous, w = g, w_next


def test_lagged_equals_exact_when_directions_are_parallel():
    # A = 3I: every gradient points at the minimum, so u_t is parallel to u_{t-1}.
    b = jnp.array([1.0, -2.0, 0.5])

    def loss(w):
        return 1.5 * w @ w + b @ w

    opt = cc.cdat(optax.sgd(1.0), sigma=1.2, curvature="lagged")
    w = jnp.array([0.3, 0.1, -0.4])
    state = opt.init(w)
    step = _stepper(opt, loss)
    for _ in range(3):
        g = 3.0 * w + b
        w, state = step(w, state)
        np.testing.assert_allclose(state[1].curvature, 3.0 * (g @ g), rtol=1e-10)


def _cubic():
    """f = quadratic + sum(c w^3) / 6: phi''' = sum(c u^3) along u, phi'''' = 0."""
    A, _b, w0, quad = _quadratic(seed=5)
    c = jnp.asarray(np.random.default_rng(6).uniform(-1.0, 1.0, 5))

    def loss(w):
        return quad(w) + jnp.sum(c * w**3) / 6.0

    def derivatives(w, u):
        return u @ (A + jnp.diag(c * w)) @ u, jnp.sum(c * u**3)

    return w0, loss, derivatives


def test_parabola_on_a_cubic_is_its_taylor_closed_form():
    w0, loss, derivatives = _cubic()
    opt = cc.cdat(optax.sgd(1.0), sigma=1.0, curvature="parabolic")
    for h in (1e-3, 0.1, 0.7):
        _, state = _step(opt, loss, w0, _with_previous_rate(opt.init(w0), h))
        second, third = derivatives(w0, -jax.grad(loss)(w0))
        np.testing.assert_allclose(state[1].curvature, second + third * h / 3.0, rtol=1e-10)


def test_forward_edge_on_a_cubic_is_a_root_of_phi():
    w0, loss, derivatives = _cubic()
    precise = cc.ForwardEdgeCurvature(max_evaluations=40, rtol=1e-12)
    for estimator in ("forward_edge", precise):
        opt = cc.cdat(optax.sgd(1.0), sigma=2.0, curvature=estimator)
        w1, state = _step(opt, loss, w0, opt.init(w0))
        n, d = -float(state[1].slope), float(state[1].curvature)
        edge = 2.0 * n / d  # sigma = 2 steps exactly to it
        np.testing.assert_allclose(float(state[1].learning_rate), edge, rtol=1e-12)
        rtol = 1e-2 if estimator == "forward_edge" else 1e-9
        # phi(edge) = phi(0) within the search's tolerance, measured against n * edge...
        assert abs(float(loss(w1) - loss(w0))) <= rtol * n * edge
        # ... so d is the chord curvature phi'' + phi''' edge / 3 (phi is a cubic).
        second, third = derivatives(w0, -jax.grad(loss)(w0))
        assert abs(d - float(second + third * edge / 3.0)) <= 2 * rtol * d
        assert 1 <= int(state[1].num_probes) <= (6 if estimator == "forward_edge" else 40)


def test_on_a_tanh_mlp_parabola_is_within_its_first_order_error():
    m = testing.mlp((3, 6, 2), num_examples=8, seed=1)

    def loss(p):
        return m.loss(p, m.inputs, m.targets)

    u = jax.tree.map(jnp.negative, jax.grad(loss)(m.params))
    exact = float(cc.directional_curvature(loss, m.params, u).curvature)
    phi = lambda t: loss(jax.tree.map(lambda w, v: w + t * v, m.params, u))  # noqa: E731
    third_derivative = jax.jit(jax.grad(jax.grad(jax.grad(phi))))
    opt = cc.cdat(optax.sgd(1.0), curvature="parabolic")
    for h in (1e-4, 1e-3):
        _, state = _step(opt, loss, m.params, _with_previous_rate(opt.init(m.params), h))
        # d_h = phi'' + phi''' h / 3 + O(h^2): within twice the first-order term (+ rounding).
        third = float(third_derivative(0.0))
        error = abs(float(state[1].curvature) - exact)
        assert error <= 2 * abs(third) * h / 3 + 1e-7 * abs(exact), (h, error, third)


def test_gauss_newton_on_a_tanh_mlp_is_J_u_squared_over_n():
    m = testing.mlp((3, 6, 2), num_examples=8, seed=2)
    gn = cc.GaussNewtonCurvature(
        lambda p, inputs: m.predict(p, inputs),
        lambda out, targets: 0.5 * jnp.mean(jnp.sum((out - targets) ** 2, axis=-1)),
    )
    opt = cc.cdat(optax.sgd(1.0), curvature=gn)
    grad = jax.grad(m.loss)(m.params, m.inputs, m.targets)
    _, state = opt.update(grad, opt.init(m.params), m.params, inputs=m.inputs, targets=m.targets)
    flat, unravel = ravel_pytree(m.params)
    jac = jax.jacfwd(lambda x: m.predict(unravel(x), m.inputs).ravel())(flat)  # dense J
    ju = jac @ (-ravel_pytree(grad)[0])
    np.testing.assert_allclose(state[1].curvature, ju @ ju / 8, rtol=1e-10)
    np.testing.assert_allclose(state[1].value, m.loss(m.params, m.inputs, m.targets), rtol=1e-12)


@pytest.mark.parametrize("curvature", ["exact", "parabolic", "lagged", "forward_edge"])
def test_every_one_refreshes_at_every_update(curvature):
    _A, _b, w, loss = _quadratic(seed=7)
    opt = cc.cdat(optax.sgd(1.0), sigma=1.0, curvature=curvature, every=1)
    state = opt.init(w)
    step = _stepper(opt, loss)
    for t in range(3):
        w, state = step(w, state)
        assert int(state[1].num_refreshes) == t + 1 and int(state[1].since_refresh) == 1


def test_exact_every_one_is_the_default_rule():
    _A, _b, w, loss = _quadratic(seed=8)
    states = []
    for kwargs in ({}, {"curvature": "exact", "every": 1}):
        opt = cc.cdat(optax.sgd(1.0), sigma=2.0, ema_decay=0.5, **kwargs)
        p, state = w, opt.init(w)
        for _ in range(3):
            p, state = _step(opt, loss, p, state)
        states.append(state[1])
    for a, b in zip(*states, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("curvature", ["exact", "forward_edge"])
def test_every_k_reuses_the_last_rayleigh_quotient(curvature):
    A, b, w, loss = _quadratic(seed=9)
    opt = cc.cdat(optax.sgd(1.0), sigma=1.0, curvature=curvature, every=3)
    state = opt.init(w)
    step = _stepper(opt, loss)
    quotient = None
    for t in range(7):
        g = A @ w + b
        w, state = step(w, state)
        inner = state[1]
        if t % 3 == 0:  # refreshed at updates 0, 3, 6
            quotient = (g @ A @ g) / (g @ g)
            np.testing.assert_allclose(inner.curvature, g @ A @ g, rtol=1e-10)
        else:  # q of the last refresh times |u_t|^2
            np.testing.assert_allclose(inner.curvature, quotient * (g @ g), rtol=1e-10)
            assert int(inner.num_probes) == 0
        np.testing.assert_allclose(inner.quotient, quotient, rtol=1e-10)
        assert int(inner.num_refreshes) == t // 3 + 1
        assert int(inner.since_refresh) == t % 3 + 1


@pytest.mark.parametrize(
    ("curvature", "every", "expected"),
    [("exact", 4, 2), ("parabolic", 4, 2), ("parabolic", 1, 8), ("lagged", 1, 1)],
)
def test_objective_runs_only_at_refreshes(curvature, every, expected):
    """Counted at run time (jax.debug.callback): with value= and grad= given, a reused step
    evaluates nothing; the lagged parabola evaluates only its first-step probe."""
    A, b, w, _ = _quadratic(seed=10)
    runs = []

    def counted(p):
        jax.debug.callback(lambda: runs.append(1))
        return 0.5 * p @ A @ p + b @ p

    def plain(p):
        return 0.5 * p @ A @ p + b @ p

    opt = cc.cdat(optax.sgd(1.0), sigma=1.0, curvature=curvature, every=every)

    @jax.jit
    def step(p, state):
        value, grad = jax.value_and_grad(plain)(p)
        updates, state = opt.update(grad, state, p, value_fn=counted, value=value, grad=grad)
        return optax.apply_updates(p, updates), state

    state = opt.init(w)
    for _ in range(8):
        w, state = step(w, state)
    jax.effects_barrier()
    assert len(runs) == expected
    assert int(state[1].num_refreshes) == {1: 8, 4: 2}[every]


def test_early_refresh_when_the_last_update_raised_the_loss():
    """sigma = 2 without EMA: the lagged quotient exceeds the reused one exactly when the last
    update raised the loss, so early_refresh refreshes then and only then."""
    _A, _b, w, loss = _quadratic(seed=11)
    opt = cc.cdat(optax.sgd(1.0), sigma=2.0, curvature="exact", every=100, early_refresh=True)
    state = opt.init(w)
    step = _stepper(opt, loss)
    values, refreshed = [], []
    for _ in range(12):
        values.append(float(loss(w)))
        before = int(state[1].num_refreshes)
        w, state = step(w, state)
        refreshed.append(int(state[1].num_refreshes) > before)
    assert refreshed[0]
    # After a refresh the step lands on the quadratic's edge: f changes by rounding only.
    changes = [(b - a) / abs(a) for a, b in itertools.pairwise(values)]
    clear = [(r, c) for r, c in zip(refreshed[1:], changes, strict=True) if abs(c) > 1e-9]
    assert all(r == (c > 0) for r, c in clear), (refreshed, changes)
    assert sum(r for r, _ in clear) > 0 and 0 < sum(refreshed[1:]) < 11  # some reused
    late = cc.cdat(optax.sgd(1.0), sigma=2.0, curvature="exact", every=100)
    p, s = _quadratic(seed=11)[2], late.init(w)
    late_step = _stepper(late, loss)
    for _ in range(12):
        p, s = late_step(p, s)
    assert int(s[1].num_refreshes) == 1  # without it: the first update only
