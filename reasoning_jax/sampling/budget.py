"""Thinking and answer budgets (Elastic Reasoning; the Tsallis paper's thinking budget).

A row starts in the thinking phase. After `think_tokens` sampled thinking tokens the
`end_think` sequence (e.g. the ids of "</think>") is forced into the output, one token
per step, each marked in `forced_mask`. If the model emits the whole sequence itself
before the budget, the row switches to the answer phase right then. In the answer
phase at most `answer_tokens` more tokens are sampled; `answer_tokens=0` stops the row
right after the end-of-thinking sequence (GARL samples only the rationale and then
teacher-forces the gold answer).

The host-side config is `ThinkingBudget`; on device every knob is a traced array, so
changing budgets never recompiles (the end sequence is padded to a small bucket).

Shape key: R rows (prompts x samples), E end-sequence bucket.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# Phases of a row.
THINK, FORCE, ANSWER = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class ThinkingBudget:
  """A thinking budget, a forced end-of-thinking sequence, then an answer budget.

  Attributes:
    think_tokens: sampled thinking tokens allowed before `end_think` is forced (>= 0).
    end_think: the token ids that close the thinking phase (non-empty), e.g. the
      tokenisation of "</think>".
    answer_tokens: tokens sampled after `end_think`; None = no limit beyond
      `max_new_tokens`; 0 = stop right after `end_think` (rationale-only sampling).
  """
  think_tokens: int
  end_think: tuple[int, ...]
  answer_tokens: int | None = None

  def __post_init__(self):
    if int(self.think_tokens) < 0:
      raise ValueError(f"ThinkingBudget.think_tokens must be >= 0, got {self.think_tokens}")
    if len(self.end_think) == 0:
      raise ValueError("ThinkingBudget.end_think is empty; give the token ids of the "
                       "end-of-thinking marker (e.g. tokenizer.encode('</think>'))")
    if self.answer_tokens is not None and int(self.answer_tokens) < 0:
      raise ValueError(f"ThinkingBudget.answer_tokens must be >= 0 or None, got "
                       f"{self.answer_tokens}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class BudgetArrays:
  """The device-side (traced) form of an optional `ThinkingBudget`.

  Attributes:
    think_tokens: int32 scalar; < 0 disables the thinking phase (rows start answering).
    answer_tokens: int32 scalar; < 0 = unlimited.
    end_E: int32 `[E]` end-of-thinking ids, padded with -1.
    end_len: int32 scalar, the real length of `end_E`.
  """
  think_tokens: jax.Array
  answer_tokens: jax.Array
  end_E: jax.Array
  end_len: jax.Array


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, n - 1).bit_length())


def budget_arrays(budget: ThinkingBudget | None, vocab_size: int) -> BudgetArrays:
  """Validate `budget` against the vocabulary and lay it out as (host) arrays."""
  if budget is None:
    return BudgetArrays(np.int32(-1), np.int32(-1), np.full((4,), -1, np.int32),
                        np.int32(0))
  if not isinstance(budget, ThinkingBudget):
    raise TypeError(f"budget must be a ThinkingBudget or None, got {type(budget).__name__}")
  end = np.asarray(budget.end_think, np.int64)
  if end.min() < 0 or end.max() >= vocab_size:
    raise ValueError(f"ThinkingBudget.end_think has ids outside [0, {vocab_size}): "
                     f"{list(budget.end_think)}")
  end_E = np.full((_bucket(len(end), 4),), -1, np.int32)
  end_E[:len(end)] = end
  answer = -1 if budget.answer_tokens is None else int(budget.answer_tokens)
  return BudgetArrays(np.int32(budget.think_tokens), np.int32(answer), end_E,
                      np.int32(len(end)))


def initial_phase(b: BudgetArrays, rows: int) -> jax.Array:
  """THINK for every row when a thinking budget is set, else ANSWER."""
  return jnp.full((rows,), jnp.where(b.think_tokens >= 0, THINK, ANSWER), jnp.int32)


def ends_with_end(window_RE: jax.Array, b: BudgetArrays) -> jax.Array:
  """Whether each row's last tokens (right-aligned in `window_RE`) are the end sequence."""
  E = window_RE.shape[1]
  j_E = jnp.arange(E, dtype=jnp.int32)
  src_E = jnp.clip(E - b.end_len + j_E, 0, E - 1)
  ok_RE = (window_RE[:, src_E] == b.end_E[None, :]) | (j_E >= b.end_len)[None, :]
  return jnp.all(ok_RE, axis=1) & (b.end_len > 0)


def push(window_RE: jax.Array, tok_R: jax.Array) -> jax.Array:
  """Shift a new token into the right end of each row's window of recent tokens."""
  return jnp.concatenate([window_RE[:, 1:], tok_R[:, None]], axis=1)
