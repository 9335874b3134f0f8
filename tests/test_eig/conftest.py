"""Jitted dense-matrix runners shared by the eigensolver tests, so each shape compiles once."""

import functools

import jax
import pytest

import cdat_core as cc


@functools.partial(jax.jit, static_argnames=("num_iters", "k"))
def _lanczos_dense(matrix, v0, rtol, num_iters=64, k=1):
    return cc.lanczos(lambda v: matrix @ v, v0, num_iters=num_iters, k=k, rtol=rtol)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def _power_dense(matrix, v0, rtol, num_iters=1000):
    return cc.power_iteration(lambda v: matrix @ v, v0, num_iters=num_iters, rtol=rtol)


@pytest.fixture(scope="session")
def lanczos_dense():
    """``lanczos_dense(matrix, v0, rtol, num_iters=64, k=1)``: jitted Lanczos on ``matrix @ v``."""
    return _lanczos_dense


@pytest.fixture(scope="session")
def power_dense():
    """``power_dense(matrix, v0, rtol, num_iters=1000)``: jitted power iteration."""
    return _power_dense
