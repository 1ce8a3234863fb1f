"""The persistent XLA compilation cache: compiled programs survive the process.

A run compiles its sampler, update and scoring programs once; with the cache on, the
next run of the same shapes (a resumed job, the next seed of a study, the CLI's eval
after train) loads them from disk instead of recompiling (seconds per program on a
CPU, minutes for a large model on a pod). JAX keys the cache on the program, the
compiler version and the devices, so a stale entry is never used.
"""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger("reasoning_jax")

DEFAULT_DIR = os.path.join("~", ".cache", "reasoning_jax", "xla")


def enable_compilation_cache(path: str = DEFAULT_DIR) -> str | None:
  """Turn the persistent compilation cache on at `path` ("" leaves it off).

  An already-configured cache (`jax_compilation_cache_dir` set by the user, a test
  harness or `JAX_COMPILATION_CACHE_DIR`) is kept as it is. Every program is cached,
  not only those compiling for over a second (JAX's default), because an RL step's
  first-step time is many sub-second compiles.

  Returns:
    The cache directory in use, or None when caching is off.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  if not path:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  log.info("persistent compilation cache: %s", path)
  return path
