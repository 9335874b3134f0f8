"""cdat_core.lab.compile_cache: the persistent cache serves a second process, and its switches."""

import json
import os
import subprocess
import sys

from cdat_core.lab import compile_cache

PROGRAM = """
import json
import jax, jax.numpy as jnp
from cdat_core.lab import compile_cache
folder = compile_cache.enable()
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + jnp.tanh(x).sum())
f(jnp.ones((16, 16))).block_until_ready()
print(json.dumps({"folder": str(folder), **compile_cache.counts()}))
"""


def _run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_its_programs_from_the_cache(tmp_path):
    first = _run(tmp_path)
    assert first["folder"] == str(tmp_path / "cdat-core" / "jax")
    assert first["programs"] >= 1 and first["cache_hits"] == 0
    assert any((tmp_path / "cdat-core" / "jax").iterdir())
    second = _run(tmp_path)
    assert second["cache_hits"] >= 1
    assert second["programs"] == first["programs"]  # the same programs, fetched


def test_the_default_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_dir() == tmp_path / "cdat-core" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compile_cache.default_dir().parts[-3:] == (".cache", "cdat-core", "jax")


def test_the_environment_variable_turns_the_cache_off(monkeypatch):
    for value, off in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(compile_cache.DISABLE_ENV, value)
        assert compile_cache.disabled_by_env() is off
    monkeypatch.delenv(compile_cache.DISABLE_ENV)
    assert not compile_cache.disabled_by_env()
