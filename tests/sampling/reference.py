"""A slow, obviously-correct host reference sampler for the tests.

Greedy decoding by re-running the full (uncached, unpadded) forward pass on the whole
sequence at every step, with the budget rules written out as a plain state machine.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from reasoning_jax import model as rjm


@dataclasses.dataclass
class RefRow:
  tokens: list[int]
  forced: list[bool]
  reason: str
  think_len: int


def full_logits(params, cfg, seq) -> np.ndarray:
  """float32 logits `[T, V]` of one sequence, by a full uncached forward pass.

  The sequence is right-padded to a multiple of 32 so a few compiled shapes serve all
  lengths; causal attention keeps the padding out of the real positions' logits.
  """
  n = len(seq)
  padded = np.zeros((1, -(-n // 32) * 32), np.int32)
  padded[0, :n] = seq
  return np.asarray(rjm.compute_logits(params, cfg, padded))[0, :n]


def log_softmax(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def greedy_reference(params, cfg, prompt, max_new, stop=(), think=None, end=(),
                     answer=None) -> RefRow:
  """Greedy continuation with stop tokens and an optional thinking/answer budget."""
  seq, out, forced = list(prompt), [], []
  phase = "answer" if think is None else "think"
  n_think = n_answer = 0
  to_force: list[int] = []
  think_len = 0 if think is None else -1

  def row(reason):
    return RefRow(out, forced, reason, think_len if think_len >= 0 else len(out))

  while len(out) < max_new:
    if phase == "think" and n_think >= think:
      phase, to_force = "force", list(end)
    if phase == "force":
      tok = to_force.pop(0)
    else:
      tok = int(np.argmax(full_logits(params, cfg, seq)[-1]))
    seq.append(tok)
    out.append(tok)
    forced.append(phase == "force")
    if phase == "force":
      if not to_force:
        phase, think_len = "answer", len(out)
        if answer == 0:
          return row("budget")
      continue
    if tok in stop:
      return row("stop")
    if phase == "think":
      n_think += 1
      if out[-len(end):] == list(end):
        phase, think_len = "answer", len(out)
        if answer == 0:
          return row("budget")
    else:
      n_answer += 1
      if answer is not None and n_answer >= answer:
        return row("budget")
  return row("length")
