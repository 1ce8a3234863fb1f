"""Compiling an RL step's scoring and update programs while the step samples.

XLA compiles without holding the GIL, so two background threads can compile the
programs the step will call after its rollouts. They run the step's own host code (the
callables the trainer passes) on a zero batch of the rollouts' exact shapes, so the
programs compiled are the very ones the step calls (jit's cache is shared between
threads); the update is only lowered and compiled, never run (it donates the params).
How much this saves depends on how many cores XLA's own compilation leaves idle.
"""
from __future__ import annotations

import logging
import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger("reasoning_jax")


def zero_rollouts(rows: int, seq_len: int) -> types.SimpleNamespace:
  """Host rollouts of `rows` x `seq_len` zeros with the fields the update reads."""
  z, zi = np.zeros((rows, seq_len), np.float32), np.zeros((rows, seq_len), np.int32)
  return types.SimpleNamespace(tokens=zi, positions=zi, mask=z, rationale_mask=z,
                               answer_mask=z, sampler_logp=z,
                               rewards=np.zeros(rows, np.float32))


def compile_ahead(rows: int, seq_len: int, *, minibatches: int,
                  update_inputs: Callable[..., tuple[Any, Any]],
                  minibatch: Callable[[Any, Any, slice], Any],
                  lower_update: Callable[[Any], Any]) -> list[threading.Thread]:
  """Start compiling the scoring and update programs for `rows` rollouts of `seq_len`
  tokens; returns the started threads (join them before the step scores).

  Args:
    rows, seq_len: the step's global rollout batch shape.
    minibatches: optimizer updates per pass (the update sees `rows // minibatches`).
    update_inputs: `(rollouts, score=None) -> (batch, inputs)`, the step's host code
      that shards the batch and scores it (with `score` in place of the scoring
      program when given).
    minibatch: `(batch, inputs, rows slice) -> update batch`.
    lower_update: `update batch -> jax Lowered` of the update program.

  Errors are logged at debug level and left for the step's own call to report.
  """
  fake = zero_rollouts(rows, seq_len)

  def scoring():
    try:
      update_inputs(fake)
    except Exception as e:  # noqa: BLE001 -- the real call reports real errors
      log.debug("compiling the scoring ahead failed: %r", e)

  def update():
    # Zeros stand in for the scores, so this need not wait for scoring to compile.
    try:
      zeros = lambda *_: (np.zeros((rows, seq_len), np.float32), None)  # noqa: E731
      batch, inputs = update_inputs(fake, score=zeros)
      lower_update(minibatch(batch, inputs, slice(0, rows // minibatches))).compile()
    except Exception as e:  # noqa: BLE001
      log.debug("compiling the update ahead failed: %r", e)

  threads = [threading.Thread(target=f, name=f"compile-ahead-{f.__name__}", daemon=True)
             for f in (scoring, update)]
  for th in threads:
    th.start()
  return threads
