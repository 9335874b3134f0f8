"""Lanczos wall time against num_iters: linear apart from the products (issue 11).

Operator: a dense symmetric ``n x n`` matrix (n = 200, 400) with a log-spaced spectrum in
[0.01, 10], float32 (JAX's default), a fixed standard-normal start. Each call makes exactly
``num_iters`` products: ``rtol=0`` (no stop test) and ``rtol=1e-30`` (the stop test runs on its
schedule but never passes), for num_iters = 25, 50, 100, 200. Every function is compiled
before timing, each round blocks on its result, and the figure is the minimum over rounds
(the machine is shared: the minimum is the least noisy estimate of the cost).

Before this suite's change, every step solved a dense ``m x m`` eigenproblem (``m`` =
num_iters): 100 iterations on n = 200 took 1.5 s, and doubling num_iters multiplied the time
by 10 to 100. Now a step costs the product, the full reorthogonalization against the basis
(two Gram-Schmidt passes over the ``m + 1`` padded rows: ``O(m n)``, memory-bound, the only
part that grows with ``m``) and, at scheduled steps, an ``O(m)`` tridiagonal solve. On these
cheap dense products the reorthogonalization dominates once ``m`` is in the hundreds, so the
time is linear plus an ``O(m^2 n)`` term; when the product dominates (a Hessian-vector
product) it is linear. The gate: doubling num_iters (below n) at most quadruples the time.
"""

import functools
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cdat_core as cc
from cdat_core import testing

ITERS = (25, 50, 100, 200)
ROUNDS = 7


def _operator(n):
    spd = testing.matrix_with_spectrum(np.geomspace(10.0, 0.01, n), seed=0)
    start = np.random.default_rng(1).standard_normal(n)
    return jnp.asarray(spd.matrix, jnp.float32), jnp.asarray(start, jnp.float32)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def _lanczos(matrix, v0, rtol, num_iters):
    return cc.lanczos(lambda v: matrix @ v, v0, num_iters=num_iters, k=1, rtol=rtol)


def _min_time(fn, *args):
    jax.block_until_ready(fn(*args))  # compile and warm up outside the timed calls
    best = np.inf
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("rtol", [0.0, 1e-30])
@pytest.mark.parametrize("n", [200, 400])
def test_lanczos_time_is_linear_in_num_iters(benchmark, bench_report, n, rtol):
    matrix, v0 = _operator(n)
    times = {}
    for m in ITERS:
        res = _lanczos(matrix, v0, rtol, num_iters=m)
        assert int(res.num_iters) == m
        times[m] = _min_time(_lanczos, matrix, v0, rtol, m)
    benchmark.pedantic(_lanczos, args=(matrix, v0, rtol, ITERS[-1]), rounds=3, iterations=1)
    per_iter = {m: times[m] / m for m in ITERS}
    ratios = [times[b] / times[a] for a, b in itertools.pairwise(ITERS)]
    benchmark.extra_info.update(
        n=n,
        rtol=rtol,
        seconds={str(m): t for m, t in times.items()},
        doubling_ratios=ratios,
        microseconds_per_iteration={str(m): 1e6 * t for m, t in per_iter.items()},
    )
    bench_report.append(
        f"lanczos n={n} rtol={rtol:g}: "
        + ", ".join(
            f"{m} it {1e3 * times[m]:.2f} ms ({1e6 * per_iter[m]:.0f} us/it)" for m in ITERS
        )
        + "; doubling ratios "
        + ", ".join(f"{r:.2f}" for r in ratios)
    )
    # The gate reads the Krylov spaces smaller than the whole space (at num_iters = n the
    # last steps break down and restart, each with one more reorthogonalization).
    assert max(r for r, m in zip(ratios, ITERS[1:], strict=True) if m < n) <= 4.0, ratios


def test_hessian_sharpness_over_lanes_vmap_against_lax_map(benchmark, bench_report):
    """Six lanes (seeds) of ``hessian_sharpness`` on the digits MLP 64-128-128-10, 512 examples.

    ``vmap`` batches Lanczos's per-lane loop counter, so every read and write of the Krylov
    basis becomes a gather or a scatter, which XLA's CPU backend runs element by element;
    ``lax.map`` runs the lanes one after the other, each at one lane's speed. The lab maps its
    sharpness probe and the exact-sharpness tuner this way
    (:func:`cdat_core.lab._train_kernels.over_lanes`). Reported: both times and their ratio;
    the gate only asks ``lax.map`` not to be slower than ``vmap``.
    """
    from cdat_core.lab import problems

    p = problems.PROBLEMS.lookup("mlp").build((128, 128), num_examples=512, seed=0)
    lanes = 6
    params = jax.tree.map(lambda x: jnp.stack([x] * lanes), p.params)
    starts = jax.tree.map(lambda x: jnp.ones((lanes, *x.shape), x.dtype), p.params)

    def one(w, v):
        res = cc.hessian_sharpness(
            lambda u: p.loss(u, p.inputs, p.targets), w, v0=v, num_iters=10, rtol=0.0
        )
        return res.eigenvalues[0]

    vmapped = jax.jit(jax.vmap(one))
    mapped = jax.jit(lambda w, v: jax.lax.map(lambda a: one(*a), (w, v)))
    np.testing.assert_allclose(vmapped(params, starts), mapped(params, starts), rtol=1e-4)
    t_vmap, t_map = _min_time(vmapped, params, starts), _min_time(mapped, params, starts)
    benchmark.pedantic(mapped, args=(params, starts), rounds=3, iterations=1)
    benchmark.extra_info.update(vmap_seconds=t_vmap, map_seconds=t_map, ratio=t_vmap / t_map)
    bench_report.append(
        f"hessian_sharpness x{lanes} lanes (10 Lanczos steps, digits MLP 64-128-128-10): "
        f"vmap {1e3 * t_vmap:.1f} ms, lax.map {1e3 * t_map:.1f} ms (vmap/map {t_vmap / t_map:.1f}x)"
    )
    assert t_map <= t_vmap
