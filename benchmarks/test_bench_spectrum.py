"""Hessian spectrum tools against dense references and against matfree (issue 17).

Two operators, float32 (JAX's default; the dense references in float64 NumPy):

- ``spectrum``: a quadratic with a chosen spectrum, n = 1000: 980 eigenvalues uniform in
  [0.01, 1] and 20 outliers uniform in [5, 50] (a Hessian-like bulk and top), in a random
  eigenbasis. Its products are dense matvecs.
- ``mlp``: the Hessian of a tanh MLP 16-32-10 (874 params) with squared loss on 256 random
  examples (``cdat_core.testing.mlp``); the reference is ``eigh`` of ``jax.hessian``.

What is measured, as error against the number of Hessian-vector products (matvecs):

- SLQ density: the L1 distance between the smoothed densities of
  ``hessian_spectral_density`` and of the exact eigenvalues, same Gaussian kernel (σ = 1%
  of the exact spectrum's range) and the same grid; for (probes, steps) in ``SLQ_CONFIGS``.
  Beside it, matfree's SLQ building block on the *same* probes: ``decomp.tridiag_sym``
  (Lanczos, full reorthogonalisation), nodes and weights from ``eigh`` of its tridiagonal,
  the same kernel. On ``spectrum`` (SPD) also tr(log H), the log-determinant, from cdat's
  nodes and weights and from matfree's public SLQ estimator
  (``stochtrace.estimator_monte_carlo`` of ``funm.monte_carlo_funm_sym_logdet``, its own
  Rademacher probes), relative error over ``REPEATS`` keys.
- Trace: RMS relative error over ``REPEATS`` keys of ``hessian_trace`` (Hutchinson and
  Hutch++) and matfree's Hutchinson (``monte_carlo_trace`` with ``sampler_signs``) at N
  matvecs, and the ratio of cdat's mean stated standard error to its RMS error.

Each configuration compiles before it is measured; wall time is recorded only by the two
``test_slq_wall_time`` benchmarks (compiled outside the timed region, blocked on the result).
"""

import functools

import jax
import jax.numpy as jnp
import matfree  # noqa: F401  (in the bench extra: fail loudly, never skip, when missing)
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from matfree import decomp, funm, stochtrace

import cdat_core as cc
from cdat_core import spectrum, testing

SLQ_CONFIGS = ((1, 10), (4, 10), (4, 40), (16, 40), (16, 100))
TRACE_PROBES = (4, 16, 64, 256)
REPEATS = 16


@functools.cache
def _problem(name):
    """(fun, params, args, flat dense Hessian as float64, its eigenvalues)."""
    if name == "spectrum":
        rng = np.random.default_rng(0)
        eig = np.concatenate([rng.uniform(0.01, 1.0, 980), rng.uniform(5.0, 50.0, 20)])
        spd = testing.matrix_with_spectrum(eig, seed=1)
        matrix = jnp.asarray(spd.matrix, jnp.float32)
        fun = lambda w, a: 0.5 * w @ (a @ w)  # noqa: E731
        return fun, jnp.zeros(1000, jnp.float32), (matrix,), spd.matrix, np.sort(eig)
    model = testing.mlp((16, 32, 10), num_examples=256, seed=0, dtype=jnp.float32)
    flat, unravel = ravel_pytree(model.params)
    hess = jax.jit(jax.hessian(lambda x: model.loss(unravel(x), model.inputs, model.targets)))
    dense = np.asarray(hess(flat), np.float64)
    dense = 0.5 * (dense + dense.T)
    args = (model.inputs, model.targets)
    return model.loss, model.params, args, dense, np.linalg.eigvalsh(dense)


def _flat_matvec(name):
    fun, params, args, _, _ = _problem(name)
    _, unravel = ravel_pytree(params)

    def matvec(v):
        return ravel_pytree(cc.hvp(fun, params, unravel(v), *args))[0]

    return matvec


def _kernel_density(grid, nodes, weights, sigma):
    z = (grid[:, None] - nodes.ravel()[None, :]) / sigma
    gauss = np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))
    return gauss @ weights.ravel() / nodes.shape[0]


def _grid_and_width(eig):
    sigma = 0.01 * (eig[-1] - eig[0])
    return np.linspace(eig[0] - 5 * sigma, eig[-1] + 5 * sigma, 4000), sigma


@functools.partial(jax.jit, static_argnames=("name", "probes", "steps"))
def _cdat_slq(key, grid, sigma, name, probes, steps):
    fun, params, args, _, _ = _problem(name)
    return cc.hessian_spectral_density(
        fun,
        params,
        *args,
        key=key,
        num_probes=probes,
        num_steps=steps,
        grid=grid,
        kernel_width=sigma,
    )


@functools.partial(jax.jit, static_argnames=("name", "probes", "steps"))
def _matfree_slq(key, name, probes, steps):
    """Nodes and weights from matfree's tridiag_sym on cdat's probes (same bits)."""
    _, params, _, _, _ = _problem(name)
    tridiag = decomp.tridiag_sym(steps, reortho="full")
    matvec = _flat_matvec(name)

    def one(k):
        v = ravel_pytree(spectrum._rademacher_like(k, params))[0]
        t = tridiag(lambda x: matvec(x), v).J_small
        nodes, vectors = jnp.linalg.eigh(t)
        return nodes, vectors[0] ** 2

    return jax.lax.map(one, jax.random.split(key, probes))


@functools.partial(jax.jit, static_argnames=("probes", "steps"))
def _matfree_logdet(key, probes, steps):
    _, params, _, _, _ = _problem("spectrum")
    integrand = funm.monte_carlo_funm_sym_logdet(decomp.tridiag_sym(steps, reortho="full"))
    sampler = stochtrace.sampler_signs(params, num=probes)
    return stochtrace.estimator_monte_carlo(integrand, sampler)(_flat_matvec("spectrum"), key)


@pytest.mark.parametrize("name", ["spectrum", "mlp"])
def test_slq_density_error_vs_matvecs(bench_report, name):
    *_, eig = _problem(name)
    grid, sigma = _grid_and_width(eig)
    exact = _kernel_density(grid, eig[None, :], np.full((1, eig.size), 1.0 / eig.size), sigma)
    dt = grid[1] - grid[0]
    rows = []
    for probes, steps in SLQ_CONFIGS:
        key = jax.random.key(0)
        out = _cdat_slq(key, jnp.asarray(grid, jnp.float32), sigma, name, probes, steps)
        ours = np.asarray(out.density, np.float64)
        nodes, weights = (np.asarray(x, np.float64) for x in _matfree_slq(key, name, probes, steps))
        theirs = _kernel_density(grid, nodes, weights, sigma)
        row = {
            "probes": probes,
            "steps": steps,
            "matvecs": int(out.num_matvecs),
            "l1_cdat": float(np.sum(np.abs(ours - exact)) * dt),
            "l1_matfree": float(np.sum(np.abs(theirs - exact)) * dt),
            "l1_cdat_vs_matfree": float(np.sum(np.abs(ours - theirs)) * dt),
        }
        if name == "spectrum":
            logdet = np.sum(np.log(eig))
            errs = {"cdat": [], "matfree": []}
            for r in range(REPEATS):
                k = jax.random.key(100 + r)
                o = _cdat_slq(k, jnp.asarray(grid, jnp.float32), sigma, name, probes, steps)
                n_w = np.asarray(o.weights, np.float64)
                est = eig.size * np.mean(np.sum(n_w * np.log(np.asarray(o.nodes, np.float64)), 1))
                errs["cdat"].append(est - logdet)
                errs["matfree"].append(float(_matfree_logdet(k, probes, steps)) - logdet)
            for lib, e in errs.items():
                row[f"logdet_rel_rms_{lib}"] = float(np.sqrt(np.mean(np.square(e)))) / abs(logdet)
        rows.append(row)
        bench_report.append(f"slq {name} " + " ".join(f"{k}={v:.4g}" for k, v in row.items()))
    l1 = [r["l1_cdat"] for r in rows]
    assert all(np.isfinite(l1)) and l1[-1] < 0.5 * l1[0]  # more matvecs, closer density
    # Same probes, both with full reorthogonalisation: the two quadratures agree closely.
    assert all(r["l1_cdat_vs_matfree"] < 0.05 * max(r["l1_cdat"], 1e-3) + 1e-3 for r in rows)


def _hutchinson_fns(name, probes):
    fun, params, args, _, _ = _problem(name)
    sampler = stochtrace.sampler_signs(ravel_pytree(params)[0], num=probes)
    matfree_est = stochtrace.estimator_monte_carlo(stochtrace.monte_carlo_trace(), sampler)
    return {
        "cdat_hutchinson": jax.jit(
            lambda k: cc.hessian_trace(fun, params, *args, key=k, num_probes=probes)
        ),
        "cdat_hutch++": jax.jit(
            lambda k: cc.hessian_trace(
                fun, params, *args, key=k, num_probes=probes, method="hutch++"
            )
        ),
        "matfree_hutchinson": jax.jit(lambda k: matfree_est(_flat_matvec(name), k)),
    }


@pytest.mark.parametrize("name", ["spectrum", "mlp"])
def test_trace_error_vs_matvecs(bench_report, name):
    *_, eig = _problem(name)
    exact = float(np.sum(eig))
    rms = {}
    for probes in TRACE_PROBES:
        row = {"matvecs": probes}
        for label, fn in _hutchinson_fns(name, probes).items():
            outs = [fn(jax.random.key(1000 + r)) for r in range(REPEATS)]
            values = [float(o.trace if isinstance(o, cc.TraceEstimate) else o) for o in outs]
            err = np.sqrt(np.mean((np.asarray(values) - exact) ** 2)) / abs(exact)
            row[f"rel_rms_{label}"] = float(err)
            if label == "cdat_hutchinson":
                stated = np.mean([float(o.standard_error) for o in outs]) / abs(exact)
                row["stated_over_rms_cdat_hutchinson"] = float(stated / err)
        rms[probes] = row
        bench_report.append(f"trace {name} " + " ".join(f"{k}={v:.4g}" for k, v in row.items()))
    first, last = rms[TRACE_PROBES[0]], rms[TRACE_PROBES[-1]]
    # 64x the probes: the Monte Carlo error falls by about 8x (1/sqrt N); allow noise.
    assert last["rel_rms_cdat_hutchinson"] < first["rel_rms_cdat_hutchinson"] / 3
    assert all(0.5 < r["stated_over_rms_cdat_hutchinson"] < 2.0 for r in rms.values())


@pytest.mark.parametrize("library", ["cdat", "matfree"])
def test_slq_wall_time(benchmark, bench_report, library):
    probes, steps = SLQ_CONFIGS[-1]
    *_, eig = _problem("spectrum")
    grid, sigma = _grid_and_width(eig)
    key = jax.random.key(0)
    if library == "cdat":
        fn = functools.partial(
            _cdat_slq, key, jnp.asarray(grid, jnp.float32), sigma, "spectrum", probes, steps
        )
    else:
        fn = functools.partial(_matfree_slq, key, "spectrum", probes, steps)
    jax.block_until_ready(fn())  # compile outside the timed region
    benchmark.group = "slq spectrum n=1000"
    benchmark.extra_info.update(matvecs=probes * steps, probes=probes, steps=steps)
    benchmark.pedantic(lambda: jax.block_until_ready(fn()), rounds=5, iterations=1)
    bench_report.append(
        f"slq wall {library} probes={probes} steps={steps}: "
        f"{1e3 * benchmark.stats.stats.min:.1f} ms (min of 5)"
    )
