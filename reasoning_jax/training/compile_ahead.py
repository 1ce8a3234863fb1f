"""Compiling an RL step's scoring and update programs while the step samples.

XLA compiles without holding the GIL, so two background threads can compile the
programs the step will call after its rollouts. They run the trainer's own host code
(`Trainer._update_inputs`, `Trainer._minibatch`) on a zero batch of the rollouts'
exact shapes, so the programs compiled are the very ones the step calls (jit's cache
is shared between threads); the update is only lowered and compiled, never run (it
donates the params). On this 2-core machine it saved ~0.5 s of a ~9 s cold first
step (XLA's default compile; `training.compile_mode`), because XLA:CPU already
compiles each program on both cores (docs/benchmarks.md); hosts with more cores
overlap more.
"""
from __future__ import annotations

import logging
import threading
import types

import jax
import numpy as np

log = logging.getLogger("reasoning_jax")


def compile_ahead(trainer, seq_len: int, temp, k_prep) -> list[threading.Thread]:
  """Start compiling `trainer`'s scoring and update programs for `seq_len`-token
  rollouts; returns the started threads (join them before the step scores).

  Each sequence length is compiled ahead once per trainer; nothing is started when
  `RunConfig.compile_ahead` is off or with several processes (their batches are
  assembled across processes). Errors are logged at debug level and left for the
  step's own call to report.
  """
  if (not trainer.exp.run.compile_ahead or jax.process_count() > 1
      or seq_len in trainer._compiled_ahead):
    return []
  trainer._compiled_ahead.add(seq_len)
  r = trainer.exp.rl
  rows = r.prompts_per_step * r.group_size
  z, zi = np.zeros((rows, seq_len), np.float32), np.zeros((rows, seq_len), np.int32)
  fake = types.SimpleNamespace(tokens=zi, positions=zi, mask=z, rationale_mask=z,
                               answer_mask=z, sampler_logp=z,
                               rewards=np.zeros(rows, np.float32))

  def scoring():
    try:
      trainer._update_inputs(fake, temp, k_prep)
    except Exception as e:  # noqa: BLE001 -- the real call reports real errors
      log.debug("compiling the scoring ahead failed: %r", e)

  def update():
    # Zeros stand in for the scores, so this need not wait for scoring to compile.
    try:
      zeros = lambda *_: (np.zeros((rows, seq_len), np.float32), None)  # noqa: E731
      batch, inputs = trainer._update_inputs(fake, temp, k_prep, score=zeros)
      sub = trainer._minibatch(batch, inputs, slice(0, rows // r.minibatches))
      trainer.rl_step.lower(trainer.params, trainer.opt_state, sub, temp).compile()
    except Exception as e:  # noqa: BLE001
      log.debug("compiling the update ahead failed: %r", e)

  threads = [threading.Thread(target=f, name=f"compile-ahead-{f.__name__}", daemon=True)
             for f in (scoring, update)]
  for th in threads:
    th.start()
  return threads
