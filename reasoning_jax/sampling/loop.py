"""The jitted sampling program: one prefill, then a `lax.while_loop` of decode steps.

Static (one compilation each): the model config, the number of samples per prompt, the
new-token bucket, and the array shapes (prompt bucket, batch bucket). Traced (change
freely): temperature, top-k, top-p, max_new_tokens, stop tokens, budgets, PRNG key.

Each prompt is prefilled once; its cache rows are then repeated for its G samples, so
a group shares one prefill. Every loop step runs one token forward (the prompt's last
token first) and chooses the next from its logits, so the output head exists once in
the program and the loop carries no [rows, vocab] logits. The KV cache lives in the
loop carry, where XLA updates it in place with `dynamic_update_slice`. The loop exits as soon as every row is done.

Shape key: B prompts (bucketed), P prompt bucket, G samples per prompt, R = B*G rows,
N new-token bucket, V vocab, S cache slots, E end-sequence bucket, K stop bucket.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from reasoning_jax import model as rjm
from reasoning_jax.sampling import budget as bud
from reasoning_jax.sampling import processors
from reasoning_jax.sampling.state import (BUDGET, LENGTH, RUNNING, STOP, DecodeState,
                                          SampleOutput)

F32 = jnp.float32
I32 = jnp.int32


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Knobs:
  """Per-call traced settings (changing any of them never recompiles).

  Attributes:
    key: the PRNG key of the call.
    temperature, top_k, top_p: sampling knobs (see `processors.sample`).
    max_new: int32 scalar, tokens to generate at most (<= the static bucket N).
    stop_K: int32 stop-token ids, padded with -1.
    pad_id: int32 scalar written after each row's end.
    budget: the thinking/answer budget (`budget.BudgetArrays`).
  """
  key: jax.Array
  temperature: jax.Array
  top_k: jax.Array
  top_p: jax.Array
  max_new: jax.Array
  stop_K: jax.Array
  pad_id: jax.Array
  budget: bud.BudgetArrays


@dataclasses.dataclass(frozen=True)
class RowInfo:
  """Per-row constants the loop body closes over."""
  keys_R: jax.Array
  prompt_len_R: jax.Array


def _grow_cache(cache: rjm.KVCache, group: int, extra: int) -> rjm.KVCache:
  """Repeat each prompt's rows `group` times and append `extra` empty slots."""
  cache = rjm.repeat_cache(cache, group) if group > 1 else cache
  kv_pad = ((0, 0), (0, 0), (0, 0), (0, extra), (0, 0))
  return rjm.KVCache(k_LBKSH=jnp.pad(cache.k_LBKSH, kv_pad),
                     v_LBKSH=jnp.pad(cache.v_LBKSH, kv_pad),
                     pos_BS=jnp.pad(cache.pos_BS, ((0, 0), (0, extra)), constant_values=-1),
                     index=cache.index)


def _write(buf_RN: jax.Array, col: jax.Array, val_R: jax.Array) -> jax.Array:
  return lax.dynamic_update_slice(buf_RN, val_R[:, None].astype(buf_RN.dtype), (0, col))


def choose(s: DecodeState, logits_RV: jax.Array, rows: RowInfo, k: Knobs) -> DecodeState:
  """Pick step `s.step`'s token for every row (sampled or forced) and update the flags."""
  t = s.step
  b = k.budget
  E = s.window_RE.shape[1]
  active = ~s.done_R
  sampled, sampled_lp = processors.sample(rows.keys_R, logits_RV, k.temperature, k.top_k,
                                          k.top_p, step=t)
  # A thinking row whose budget is spent starts forcing the end sequence now.
  start_force = (s.phase_R == bud.THINK) & (s.think_count_R >= b.think_tokens)
  phase = jnp.where(start_force, bud.FORCE, s.phase_R)
  forcing = phase == bud.FORCE
  force_idx = jnp.where(start_force, 0, s.force_idx_R)
  tok = jnp.where(forcing, b.end_E[jnp.clip(force_idx, 0, E - 1)], sampled)
  lp = jnp.where(forcing, 0.0, sampled_lp)  # a forced token comes from a point mass
  model_lp = processors.token_logprobs(logits_RV, tok)

  window = bud.push(s.window_RE, tok)
  thinking = phase == bud.THINK
  answering = phase == bud.ANSWER
  force_idx = force_idx + forcing.astype(I32)
  ended_think = ((thinking & bud.ends_with_end(window, b))
                 | (forcing & (force_idx >= b.end_len)))
  answer_count = s.answer_count_R + answering.astype(I32)

  is_stop = ~forcing & jnp.any(tok[:, None] == k.stop_K[None, :], axis=1)
  limited = b.answer_tokens >= 0
  budget_hit = limited & ((ended_think & (b.answer_tokens == 0))
                          | (answering & (answer_count >= b.answer_tokens)))
  length_hit = t + 1 >= k.max_new
  reason = jnp.where(is_stop, STOP, jnp.where(budget_hit, BUDGET,
                                              jnp.where(length_hit, LENGTH, RUNNING)))
  finishing = active & (reason != RUNNING)

  def upd(new, old):
    return jnp.where(active, new, old)

  return DecodeState(
      cache=s.cache, step=t + 1, last_R=upd(tok, s.last_R),
      tokens_RN=_write(s.tokens_RN, t, jnp.where(active, tok, k.pad_id)),
      logprobs_RN=_write(s.logprobs_RN, t, jnp.where(active, lp, 0.0)),
      model_logprobs_RN=_write(s.model_logprobs_RN, t, jnp.where(active, model_lp, 0.0)),
      forced_RN=_write(s.forced_RN, t, active & forcing),
      done_R=s.done_R | finishing,
      finish_R=jnp.where(finishing, reason, s.finish_R),
      length_R=jnp.where(finishing, t + 1, s.length_R),
      phase_R=upd(jnp.where(ended_think, bud.ANSWER, phase), s.phase_R),
      think_count_R=upd(s.think_count_R + thinking.astype(I32), s.think_count_R),
      answer_count_R=upd(answer_count, s.answer_count_R),
      force_idx_R=upd(force_idx, s.force_idx_R),
      think_len_R=jnp.where(active & ended_think, t + 1, s.think_len_R),
      window_RE=jnp.where(active[:, None], window, s.window_RE))


def _initial_state(cache, last_R, valid_R, k: Knobs, N: int, E: int) -> DecodeState:
  R = valid_R.shape[0]
  phase_R = bud.initial_phase(k.budget, R)
  zeros_R = jnp.zeros((R,), I32)
  return DecodeState(
      cache=cache, step=jnp.zeros((), I32), last_R=last_R,
      tokens_RN=jnp.full((R, N), k.pad_id, I32), logprobs_RN=jnp.zeros((R, N), F32),
      model_logprobs_RN=jnp.zeros((R, N), F32), forced_RN=jnp.zeros((R, N), bool),
      done_R=~valid_R, finish_R=zeros_R, length_R=zeros_R, phase_R=phase_R,
      think_count_R=zeros_R, answer_count_R=zeros_R, force_idx_R=zeros_R,
      # No thinking phase: zero thinking tokens. Otherwise -1 until the end sequence.
      think_len_R=jnp.where(phase_R == bud.ANSWER, 0, -1),
      window_RE=jnp.full((R, E), -1, I32))


_STATIC = ("cfg", "group", "new_bucket", "constrain")


@functools.partial(jax.jit, static_argnames=_STATIC)
def sample_program(params, tokens_BP: jax.Array, positions_BP: jax.Array,
                   prompt_len_B: jax.Array, valid_B: jax.Array, knobs: Knobs, *,
                   cfg: rjm.ModelConfig, group: int, new_bucket: int,
                   constrain=None) -> SampleOutput:
  """Prefill the left-padded prompts once, repeat for the group, decode until done.

  Args:
    params: model params (may arrive sharded; shardings follow the inputs).
    tokens_BP, positions_BP: left-padded prompts, positions -1 on pads.
    prompt_len_B: real prompt lengths; valid_B: False on batch-bucket filler rows.
    knobs: traced settings.
    cfg, group, new_bucket: static config, samples per prompt, new-token bucket.
    constrain: optional static callable `(pytree, kind) -> pytree` adding sharding
      constraints ("cache" or "rows"); None on one device.
  """
  B, P = tokens_BP.shape
  R = B * group
  hold = constrain or (lambda x, _: x)
  # Float32 master weights with bf16 compute: cast once per call, before the loop, so
  # every decode step reads bf16 weights (half the bytes) instead of casting per use;
  # layer weights travel as bits so XLA cannot re-convert them per step.
  params = rjm.decode_params(params, cfg)
  # The prefill fills the cache with every prompt token but computes no logits; the
  # loop's first step runs each prompt's last token again (left padding puts it in the
  # last column of every row), rewriting its slot, and chooses from its logits. So the
  # output head exists only inside the loop: a separate prefill head made XLA:CPU
  # convert the embedding to float32 twice more per call, and carrying the logits
  # costs R * V * 4 bytes. The prefill keeps all P columns (not P - 1) so that
  # its matmul shapes, and hence its rounding, stay those of the bucket; its last
  # column is the one token computed twice, which replaces the old loop's wasted
  # forward pass after the last token.
  with jax.named_scope("prefill"):
    cache = hold(rjm.init_cache(cfg, B, P), "cache")
    _, cache = rjm.forward_hidden(params, tokens_BP, positions_BP, cfg, cache)
    cache = dataclasses.replace(cache, index=cache.index - 1)
  cache = hold(_grow_cache(cache, group, new_bucket), "cache")
  last_R = jnp.repeat(tokens_BP[:, -1], group) if group > 1 else tokens_BP[:, -1]
  prompt_len_R = jnp.repeat(prompt_len_B, group)
  valid_R = jnp.repeat(valid_B, group)
  # One key per output row, so a row's samples do not depend on the batch around it.
  keys_R = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(knobs.key,
                                                          jnp.arange(R, dtype=I32))
  rows = RowInfo(keys_R=keys_R, prompt_len_R=prompt_len_R)
  E = knobs.budget.end_E.shape[0]
  state = _initial_state(cache, last_R.astype(I32), valid_R, knobs, new_bucket, E)

  def cond(s: DecodeState):
    return (s.step < new_bucket) & ~jnp.all(s.done_R)

  # Run the last token forward, then choose: the first token is chosen by the same
  # code as every other, so the sampling step compiles once.
  def body(s: DecodeState):
    pos_R = rows.prompt_len_R + s.step - 1  # position of `last_R`
    logits_R1V, cache = rjm.forward(params, s.last_R[:, None], pos_R[:, None], cfg,
                                    s.cache)
    s = choose(dataclasses.replace(s, cache=hold(cache, "cache")), logits_R1V[:, 0],
               rows, knobs)
    return hold(s, "rows")

  with jax.named_scope("decode"):
    s = lax.while_loop(cond, body, hold(state, "rows"))
  group_R = jnp.repeat(jnp.arange(B, dtype=I32), group)
  return SampleOutput(
      tokens=s.tokens_RN, lengths=s.length_R, logprobs=s.logprobs_RN,
      model_logprobs=s.model_logprobs_RN, forced_mask=s.forced_RN,
      finish_reason=s.finish_R,
      think_lengths=jnp.where(s.think_len_R < 0, s.length_R, s.think_len_R),
      prompt_lengths=prompt_len_R, group=group_R)


@functools.cache
def _program_with(options: tuple) -> object:
  return jax.jit(sample_program.__wrapped__, static_argnames=_STATIC,
                 compiler_options=dict(options))


def program(compiler_options=None):
  """`sample_program`, or its twin compiled with XLA `compiler_options` (a dict of
  XLA debug options, e.g. `training.compile_mode.FAST_CPU_OPTIONS`); one jitted
  function per distinct options, so each keeps its own compilation cache."""
  if not compiler_options:
    return sample_program
  return _program_with(tuple(sorted(compiler_options.items())))
