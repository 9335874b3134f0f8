"""Strict JAX (x64, rank and dtype promotion raise) and hypothesis profiles for every test."""

from cdat_core import testing

testing.configure_strict_jax()
testing.register_hypothesis_profiles()
