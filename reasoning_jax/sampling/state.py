"""Decode state and the sampler's output, both registered dataclass pytrees.

Shape key: R rows (= prompts x samples), N new-token slots, E end-sequence bucket,
B prompts.
"""
from __future__ import annotations

import dataclasses

import jax

from reasoning_jax.model import KVCache

# Finish reasons (`SampleOutput.finish_reason`); `FINISH_REASONS[i]` names code i.
RUNNING, STOP, LENGTH, BUDGET = 0, 1, 2, 3
FINISH_REASONS = ("running", "stop", "length", "budget")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
  """Everything the decode loop carries from one step to the next.

  Attributes:
    cache: the KV cache (updated in place by the loop).
    step: int32 scalar, tokens produced so far (the next column to write).
    last_R: the next forward pass's input: the prompt's last token at step 0, then
      the token produced last.
    tokens_RN, logprobs_RN, model_logprobs_RN, forced_RN: the outputs so far.
    done_R, finish_R, length_R: per-row completion flags, reason codes and lengths.
    phase_R: THINK, FORCE or ANSWER (see `budget`).
    think_count_R: sampled thinking tokens; answer_count_R: answer tokens.
    force_idx_R: next index into the end sequence while forcing.
    think_len_R: tokens up to and including the end-of-thinking sequence.
    window_RE: the last E produced tokens, right-aligned (-1 before any).
  """
  cache: KVCache
  step: jax.Array
  last_R: jax.Array
  tokens_RN: jax.Array
  logprobs_RN: jax.Array
  model_logprobs_RN: jax.Array
  forced_RN: jax.Array
  done_R: jax.Array
  finish_R: jax.Array
  length_R: jax.Array
  phase_R: jax.Array
  think_count_R: jax.Array
  answer_count_R: jax.Array
  force_idx_R: jax.Array
  think_len_R: jax.Array
  window_RE: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SampleOutput:
  """What `generate` returns; rows are prompt-major (prompt i owns rows i*G .. i*G+G-1).

  Attributes:
    tokens: int32 `[B*G, max_new_tokens]`, `pad_id` after each row's end.
    lengths: int32 `[B*G]`, generated tokens per row (stop and forced tokens included).
    logprobs: float32 `[B*G, max_new_tokens]`, log-probability of each token under the
      distribution it was drawn from (tempered + truncated); 0 for greedy and for
      forced tokens (both point masses); 0 after the end.
    model_logprobs: float32, log-probability of each token under the unmodified model
      (temperature 1, no truncation), forced tokens included: the behaviour policy for
      importance-sampling corrections.
    forced_mask: bool, True on tokens forced by a thinking budget.
    finish_reason: int32 `[B*G]`, an index into `FINISH_REASONS` (stop, length, budget).
    think_lengths: int32 `[B*G]`, tokens up to and including the end-of-thinking
      sequence (equal to `lengths` when thinking never ended or no budget was given).
    prompt_lengths: int32 `[B*G]`, each row's prompt length.
    group: int32 `[B*G]`, the index of each row's prompt.
  """
  tokens: jax.Array
  lengths: jax.Array
  logprobs: jax.Array
  model_logprobs: jax.Array
  forced_mask: jax.Array
  finish_reason: jax.Array
  think_lengths: jax.Array
  prompt_lengths: jax.Array
  group: jax.Array
