"""cdat_learning_rate (eq 8) and its fixed-sigma forms greedy (eq 3) and on-edge (eq 7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    ("slope", "curvature", "sigma", "eps", "expected"),
    [
        (-6.0, 12.0, 2.0, 0.0, 1.0),
        (-6.0, 12.0, 1.0, 0.0, 0.5),
        (-6.0, 12.0, 2.0, 3.0, 12.0 / 15.0),
        (-1e-3, 4e-6, 2.0, 0.0, 500.0),
        (-6.0, -12.0, 2.0, 0.0, 1.0),  # negative curvature: |uᵀHu|
    ],
)
def test_closed_form(slope, curvature, sigma, eps, expected):
    out = cc.cdat_learning_rate(jnp.float64(slope), jnp.float64(curvature), sigma=sigma, eps=eps)
    assert float(out) == pytest.approx(expected, rel=1e-12)


def test_greedy_and_on_edge_fix_sigma():
    slope, curvature = jnp.float64(-3.0), jnp.float64(7.0)
    greedy = cc.greedy_learning_rate(slope, curvature)
    on_edge = cc.on_edge_learning_rate(slope, curvature)
    assert float(greedy) == pytest.approx(3.0 / 7.0, rel=1e-14)
    assert float(on_edge) == pytest.approx(6.0 / 7.0, rel=1e-14)
    assert float(cc.cdat_learning_rate(slope, curvature, sigma=1.0)) == float(greedy)
    assert float(cc.cdat_learning_rate(slope, curvature, sigma=2.0)) == float(on_edge)
    with pytest.raises(TypeError, match="sigma"):
        cc.greedy_learning_rate(slope, curvature, sigma=3.0)
    with pytest.raises(TypeError, match="sigma"):
        cc.on_edge_learning_rate(slope, curvature, sigma=3.0)


def test_max_learning_rate_caps_and_fallbacks():
    slope, curvature = jnp.float64(-6.0), jnp.float64(12.0)
    assert float(cc.cdat_learning_rate(slope, curvature, max_learning_rate=0.25)) == 0.25
    assert float(cc.cdat_learning_rate(slope, curvature, max_learning_rate=5.0)) == 1.0
    # Zero denominator with a positive numerator: the cap when finite, else no step.
    assert float(cc.cdat_learning_rate(slope, jnp.float64(0.0), max_learning_rate=3.0)) == 3.0
    assert float(cc.cdat_learning_rate(slope, jnp.float64(0.0))) == 0.0
    # A quotient that overflows is treated like a zero denominator.
    tiny = jnp.float64(1e-310)  # below the smallest normal float64
    assert float(cc.cdat_learning_rate(jnp.float64(-1e300), tiny)) == 0.0
    assert float(cc.cdat_learning_rate(jnp.float64(-1e300), tiny, max_learning_rate=7.0)) == 7.0


@pytest.mark.parametrize(
    ("slope", "curvature", "kwargs", "expected"),
    [
        (NAN, 1.0, {}, 0.0),
        (-1.0, NAN, {}, 0.0),
        (-INF, 1.0, {}, 0.0),
        (-1.0, INF, {}, 0.0),
        (-1.0, 1.0, {"sigma": NAN}, 0.0),
        (-1.0, 1.0, {"eps": INF}, 0.0),
        (-1.0, 1.0, {"max_learning_rate": NAN}, 0.0),
        (0.5, 1.0, {}, 0.0),  # ascent direction
        (0.0, 1.0, {}, 0.0),  # zero numerator
        (0.0, 0.0, {"max_learning_rate": 2.0}, 0.0),  # zero numerator, zero denominator
        (-1.0, 0.0, {"max_learning_rate": 2.0}, 2.0),
        (-1.0, 0.0, {}, 0.0),
        (-1.0, 1.0, {"sigma": -2.0}, 0.0),  # a negative sigma never makes an ascent step
    ],
)
def test_bad_input_gives_defined_value_and_finite_gradients(slope, curvature, kwargs, expected):
    def rate(s, c):
        return cc.cdat_learning_rate(s, c, **kwargs)

    s, c = jnp.float64(slope), jnp.float64(curvature)
    assert float(rate(s, c)) == expected
    grads = jax.grad(rate, argnums=(0, 1))(s, c)
    assert all(bool(jnp.isfinite(g)) for g in grads), grads


def test_gradient_matches_closed_form_where_smooth():
    s, c, sigma = jnp.float64(-3.0), jnp.float64(2.0), 2.0
    ds, dc = jax.grad(lambda s, c: cc.cdat_learning_rate(s, c, sigma=sigma), (0, 1))(s, c)
    assert float(ds) == pytest.approx(-sigma / 2.0)
    assert float(dc) == pytest.approx(-sigma * 3.0 / 4.0)


def test_dtypes():
    out32 = cc.cdat_learning_rate(jnp.float32(-1.0), jnp.float32(2.0))
    assert out32.dtype == jnp.float32
    out16 = cc.cdat_learning_rate(jnp.bfloat16(-1.0), jnp.bfloat16(3.0))
    assert out16.dtype == jnp.float32  # scalar rules compute in at least float32
    assert float(out16) == pytest.approx(2.0 / 3.0, rel=1e-6)
    assert cc.cdat_learning_rate(jnp.float64(-1.0), jnp.float64(2.0)).dtype == jnp.float64
    # Traced hyperparameters of another width are cast, not promoted.
    out = cc.cdat_learning_rate(jnp.float32(-1.0), jnp.float32(2.0), sigma=jnp.float64(2.0))
    assert out.dtype == jnp.float32


def test_vmap_and_jit_trace_once():
    calls = []

    def rule(s, c, sigma):
        calls.append(1)
        return cc.cdat_learning_rate(s, c, sigma=sigma)

    jitted = jax.jit(rule)
    rng = np.random.default_rng(0)
    for _ in range(3):
        s, c = -jnp.abs(jnp.asarray(rng.standard_normal())), jnp.asarray(rng.uniform(0.5, 2.0))
        sigma = jnp.asarray(rng.uniform(1.0, 3.0))
        assert float(jitted(s, c, sigma)) == pytest.approx(float(sigma * -s / c), rel=1e-12)
    assert len(calls) == 1

    slopes = jnp.asarray([-1.0, 2.0, -3.0, NAN])
    curvatures = jnp.asarray([2.0, 1.0, 0.0, 1.0])
    out = jax.vmap(lambda s, c: cc.cdat_learning_rate(s, c, max_learning_rate=9.0))(
        slopes, curvatures
    )
    np.testing.assert_array_equal(out, [1.0, 0.0, 9.0, 0.0])


def test_quotient_beyond_float_range_counts_as_no_curvature():
    # In float32 quotients above finfo.max**0.25 ≈ 1.2e9 would overflow the gradients.
    s, c = jnp.float32(-1e5), jnp.float32(1e-5)
    assert float(cc.cdat_learning_rate(s, c)) == 0.0
    assert float(cc.cdat_learning_rate(s, c, max_learning_rate=10.0)) == 10.0
    assert float(cc.cdat_learning_rate(jnp.float32(-1e3), jnp.float32(1e-5))) == pytest.approx(2e8)
