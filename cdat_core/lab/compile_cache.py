"""JAX's persistent compilation cache for the command line, and counters of XLA compilations.

:func:`enable` points JAX's persistent compilation cache at a folder (by default
:func:`default_dir`: ``$XDG_CACHE_HOME/cdat-core/jax``, else ``~/.cache/cdat-core/jax``) and
caches every program whatever its compile time; ``cdat-core verify`` calls it unless given
``--no-compile-cache`` or the environment variable :data:`DISABLE_ENV` is ``1``.
:func:`counts` reads counters kept from JAX's monitoring events (since this module was
imported): programs compiled or fetched from the cache, seconds spent, cache hits and the
compile seconds those hits saved (the compile time recorded with the cached program).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import jax
from jax import monitoring

__all__ = ["DISABLE_ENV", "counts", "current_dir", "default_dir", "disabled_by_env", "enable"]

#: Set to ``1`` to keep the command line from using the persistent cache.
DISABLE_ENV = "CDAT_CORE_NO_COMPILE_CACHE"

_COMPILE = "/jax/core/compile/backend_compile_duration"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"
_HIT = "/jax/compilation_cache/cache_hits"
_lock = threading.Lock()
_enabled: list[str | None] = [None]
_counts = {"programs": 0.0, "compile_seconds": 0.0, "cache_hits": 0.0, "seconds_saved": 0.0}


def _on_duration(event: str, duration_secs: float, **_: str | int) -> None:
    with _lock:
        if event == _COMPILE:
            _counts["programs"] += 1
            _counts["compile_seconds"] += duration_secs
        elif event == _SAVED:
            _counts["seconds_saved"] += duration_secs


def _on_event(event: str, **_: str | int) -> None:
    if event == _HIT:
        with _lock:
            _counts["cache_hits"] += 1


monitoring.register_event_duration_secs_listener(_on_duration)
monitoring.register_event_listener(_on_event)


def counts() -> dict[str, float]:
    """Compilation counters since this module was imported.

    Returns:
      ``programs`` (compiled or fetched from the cache), ``compile_seconds`` (their total
      time), ``cache_hits``, ``seconds_saved`` (compile time the hits saved).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from cdat_core.lab import compile_cache
      >>> before = compile_cache.counts()["programs"]
      >>> _ = jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(7))
      >>> compile_cache.counts()["programs"] > before
      True
    """
    with _lock:
        return dict(_counts)


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/cdat-core/jax``, or ``~/.cache/cdat-core/jax``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "cdat-core" / "jax"


def disabled_by_env() -> bool:
    """Whether :data:`DISABLE_ENV` asks for no cache (any value but ``""`` and ``"0"``)."""
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


def current_dir() -> str | None:
    """The folder :func:`enable` set for this process (``None``: not called)."""
    return _enabled[0]


def enable(path: str | Path | None = None) -> Path:
    """Use JAX's persistent compilation cache in ``path`` (default :func:`default_dir`).

    Every program is cached, however short its compilation. Call it before the first
    compilation of the process.

    Args:
      path: the cache folder (created).

    Returns:
      The folder.
    """
    folder = Path(path) if path is not None else default_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _enabled[0] = str(folder)
    return folder
