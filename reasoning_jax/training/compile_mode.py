"""How hard XLA works on a run's programs: `RunConfig.compile_mode`.

On a CPU, XLA takes every fused kernel of a program through its MLIR fusion emitters
and then LLVM at full optimisation, at a cost per kernel whatever its size. An RL step
holds hundreds of kernels (sampler, scoring, update), so a small model's first step is
mostly compilation. "fast" compiles with the older fused-kernel emitters and LLVM -O1:
compilation takes about half as long and the compiled steps run a little slower. A
large model pays far more for the same options (its steps run much slower and it
compiles only a few programs), so the trade is worth it only for small models
(benchmarks/rl_step.py --compile_mode measures it).

So "auto" (the default) compiles fast for models up to `AUTO_FAST_MAX_PARAMS` on a CPU
backend and fully optimised otherwise; "fast" and "optimized" force one. TPU and GPU
programs are always compiled with XLA's defaults: these options are CPU backend flags.
Newer XLAs drop debug options (jax 0.12's has no `xla_cpu_use_fusion_emitters`: its
older emitters are gone), so each option is kept only if this XLA accepts it; there
"fast" is LLVM -O1 alone. (`xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE`, accepted
by both, did not shorten the first step.)
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import numpy as np

log = logging.getLogger("reasoning_jax")

COMPILE_MODES = ("auto", "fast", "optimized")

# XLA debug options for a fast CPU compile (passed per program via jax.jit).
FAST_CPU_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False,
                                    "xla_backend_optimization_level": 1}

# A model of a few million params is compile-bound for its first tens of steps; one of
# over a hundred million is run-bound from its first step. The line sits between them.
AUTO_FAST_MAX_PARAMS = 20_000_000


def check_compile_mode(mode: str) -> str:
  """`mode` if it is a known compile mode, else a ValueError naming the choices."""
  if mode not in COMPILE_MODES:
    raise ValueError(f"unknown compile_mode {mode!r}; choose one of {COMPILE_MODES} "
                     "('auto' compiles small CPU models fast, large ones optimised)")
  return mode


def compiler_options(mode: str, num_params: int, platform: str) -> dict[str, Any] | None:
  """The XLA options for a run's jitted programs (None = XLA's defaults).

  Args:
    mode: "auto", "fast" or "optimized" (see the module docstring).
    num_params: the model's parameter count (decides "auto").
    platform: the devices' platform ("cpu", "tpu", "gpu"); only "cpu" is changed.
  """
  check_compile_mode(mode)
  if platform != "cpu" or mode == "optimized":
    return None
  if mode == "auto" and num_params > AUTO_FAST_MAX_PARAMS:
    return None
  return {k: v for k, v in FAST_CPU_OPTIONS.items() if accepted(k, v)} or None


@functools.cache
def accepted(name: str, value: Any) -> bool:
  """Whether this jaxlib's XLA knows the debug option `name` (one tiny compile)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(np.float32(0)).compile()
  except jax.errors.JaxRuntimeError as e:
    if "compile option" not in str(e):
      raise
    log.info("this XLA has no compile option %s; compiling without it", name)
    return False
  return True
