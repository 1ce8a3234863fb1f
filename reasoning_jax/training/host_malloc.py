"""Keep XLA:CPU's per-step buffers in the process instead of re-faulting them each step.

XLA:CPU allocates every execution's temporary buffers with the C allocator and frees
them when it ends. glibc serves blocks over its mmap threshold (32 MiB at most) with
a fresh `mmap` and gives them back with `munmap`; the XLA worker threads allocate
from their own arenas, which cannot hold a block over 64 MiB at all and mmap it
too. So each train step re-faults all of its activations page by page: at the
SmolLM2-135M shape (batch 8 x 256) 0.57 M page faults (2.3 GB) and ~1 s of kernel
time per step with remat "dots", 1.65 M faults and ~4.5 s with no remat
(docs/benchmarks.md). Tuned, the heap keeps the freed blocks and the next steps reuse
them: no faults once the heap has grown to the steps' peak (a few steps). Not always:
JAX frees some buffers a little after a call returns, and small blocks can settle
inside a freed large one, so the heap still grows now and then, more often on a
loaded machine (a loop of jitted calls with 64 MiB outputs re-faulted in up to half
of its calls with two such processes side by side).

The tuning is three `mallopt` settings: one arena for all threads, no `mmap` for
large blocks, no trimming of the heap top. Arenas are bound when a thread first
allocates, so it only works before JAX starts its backend (the CPU client's threads);
later it changes nothing and is skipped. Its prices: the process keeps its peak heap
size until it exits (as TCMalloc and jemalloc do by default), and every thread now
shares one arena lock. That lock costs more than the faults save in small-model,
malloc-heavy work: ref-tiny's RL step got slower (first step 9.3 -> 13.4 s, as LLVM's
compile threads contend; warm step 1.10 -> 1.35 s). So it is opt-in
(`RunConfig.host_malloc`, or a call before JAX starts). It is skipped on hosts with
an accelerator plugin (device memory is not malloc'd there) and off glibc, and
`REASONING_JAX_HOST_MALLOC=0` vetoes it.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys

log = logging.getLogger("reasoning_jax")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin",
                        "jax_rocm60_plugin", "jax_rocm7_plugin")
_applied = False


def _backend_started() -> bool:
  """Whether JAX has created a backend (and with it the threads whose arenas count)."""
  xb = sys.modules.get("jax._src.xla_bridge")
  return bool(getattr(xb, "_backends", None)) if xb is not None else False


def _configured_platforms() -> str:
  """JAX's platform list as configured (`JAX_PLATFORMS` or jax.config), "" if unset."""
  if "jax" in sys.modules:
    return sys.modules["jax"].config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
  return os.environ.get("JAX_PLATFORMS", "")


def _accelerator_host() -> bool:
  """True when JAX will (or may) run on a TPU/GPU rather than the CPU."""
  platforms = _configured_platforms()
  if platforms:
    return platforms.split(",")[0].strip() != "cpu"
  return any(importlib.util.find_spec(p) is not None for p in _ACCELERATOR_PLUGINS)


def tune_host_malloc() -> bool:
  """Make glibc keep freed large blocks for reuse (see the module docstring).

  Call it before the first JAX computation; with `RunConfig.host_malloc` the trainer
  calls it first thing (which is early enough for `reasoning-jax train` and for
  scripts that build a `Trainer` before touching JAX). Idempotent.

  Returns:
    True when the settings are in force (now or from an earlier call).
  """
  global _applied
  if _applied:
    return True
  if os.environ.get("REASONING_JAX_HOST_MALLOC", "1") == "0":
    return False
  if not sys.platform.startswith("linux") or _accelerator_host():
    return False
  if _backend_started():
    log.debug("host malloc tuning skipped: the JAX backend already started")
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
    libc.gnu_get_libc_version  # noqa: B018 -- raises AttributeError off glibc (musl)
  except (OSError, AttributeError):
    return False
  # mallopt's value is an int; -1 converts to SIZE_MAX inside glibc: never trim.
  ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1)
  _applied = ok
  return ok
