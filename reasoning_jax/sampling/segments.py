"""Resumable decoding: the jitted programs under multi-turn episodes and refilled rows.

`sample_program` (loop.py) prefills and decodes in one call and keeps nothing. An
episode instead returns to the host at a tool call (or every K steps) and continues
later in the same cache, so the decode state is carried between calls as `Rows`, and
three programs work on it, each compiled once per shape:

- `decode_chunk`: one `lax.while_loop` of one-token steps over the active rows, until
  each has stopped (a stop sequence, its token budget) or the chunk's step limit. A
  tool-call boundary is just another stop sequence: the loop stays one program.
- `append`: prefills a new segment per row into the cache (a tool observation, or a
  new prompt in a refilled row, whose old slots are cleared first): only the new
  tokens run through the model.
- `compact`: moves each row's live slots to the front of the cache, so a cache of
  fixed size serves any number of turns and refills.

Invariants: a row's `last_R` is the next token to run and is not in the cache yet; it
sits at position `pos_R`. Every call writes the same slot columns for all rows (the
cache's one `index`), so a row that is not active in a call writes position -1 there,
which attention masks out. Masks come from positions only, so a row's slots need not
be contiguous or in order.

Shape key: R rows, S cache slots, N chunk new-token bucket, M segment bucket, Q stop
sequences, E stop-sequence bucket, V vocab.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from reasoning_jax import model as rjm
from reasoning_jax.sampling import processors

F32 = jnp.float32
I32 = jnp.int32


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Rows:
  """Decode state carried between host calls.

  Attributes:
    cache: the KV cache (S slots per row).
    last_R: each row's next input token (not in the cache yet); pos_R its position.
    window_RE: the row's last E sampled tokens, right-aligned (-1 before any), for
      stop sequences.
    made_R: tokens sampled so far in the row's episode; a row's draw at its t-th
      token uses `fold_in(keys_R[row], t)`, so it does not depend on chunking.
  """
  cache: rjm.KVCache
  last_R: jax.Array
  pos_R: jax.Array
  window_RE: jax.Array
  made_R: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ChunkKnobs:
  """Traced settings of a `decode_chunk` call (changing them never recompiles).

  Attributes:
    temperature, top_k, top_p: sampling knobs (`processors.sample`).
    stop_QE: int32 stop sequences (EOS, tool-call ends), -1-padded; stop_len_Q their
      lengths (0 = unused entry).
    max_steps: int32 scalar, the most decode steps of this call (<= N).
    pad_id: int32 scalar written after each row's last token of the call.
  """
  temperature: jax.Array
  top_k: jax.Array
  top_p: jax.Array
  stop_QE: jax.Array
  stop_len_Q: jax.Array
  max_steps: jax.Array
  pad_id: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Chunk:
  """What one `decode_chunk` call produced, per row, in columns `[0, count_R)`.

  Attributes:
    tokens_RN, logprobs_RN, model_logprobs_RN: sampled tokens, their log-probs under
      the sampling distribution, and under the unmodified model.
    count_R: tokens produced in this call.
    stop_R: int32 index of the stop sequence that ended the row, -1 if none did.
  """
  tokens_RN: jax.Array
  logprobs_RN: jax.Array
  model_logprobs_RN: jax.Array
  count_R: jax.Array
  stop_R: jax.Array


def empty_rows(cfg: rjm.ModelConfig, rows: int, slots: int, window: int) -> Rows:
  """A cache of `slots` empty slots per row and no tokens."""
  # Separate buffers: the programs donate the state, and one buffer cannot be
  # donated twice.
  return Rows(cache=rjm.init_cache(cfg, rows, slots), last_R=jnp.zeros((rows,), I32),
              pos_R=jnp.zeros((rows,), I32), window_RE=jnp.full((rows, window), -1, I32),
              made_R=jnp.zeros((rows,), I32))


def stop_hits(window_RE: jax.Array, stop_QE: jax.Array, stop_len_Q: jax.Array
              ) -> jax.Array:
  """int32 `[R]`: the first stop sequence each row's window ends with, -1 if none."""
  E = window_RE.shape[1]
  j_E = jnp.arange(E, dtype=I32)
  src_QE = jnp.clip(E - stop_len_Q[:, None] + j_E[None, :], 0, E - 1)
  ok_RQE = ((window_RE[:, src_QE] == stop_QE[None]) |
            (j_E[None, None, :] >= stop_len_Q[None, :, None]))
  hit_RQ = jnp.all(ok_RQE, axis=-1) & (stop_len_Q > 0)[None, :]
  return jnp.where(jnp.any(hit_RQ, axis=1), jnp.argmax(hit_RQ, axis=1), -1).astype(I32)


def _write(buf_RN: jax.Array, col: jax.Array, val_R: jax.Array) -> jax.Array:
  return lax.dynamic_update_slice(buf_RN, val_R[:, None].astype(buf_RN.dtype), (0, col))


@functools.partial(jax.jit, static_argnames=("cfg", "new_bucket"), donate_argnums=(1,))
def decode_chunk(params, rows: Rows, active_R: jax.Array, budget_R: jax.Array,
                 keys_R: jax.Array, knobs: ChunkKnobs, *, cfg: rjm.ModelConfig,
                 new_bucket: int) -> tuple[Rows, Chunk]:
  """Decode the active rows until each stops, runs out of budget, or the chunk ends.

  Args:
    params: model params.
    rows: the carried state (donated: its cache is updated in place).
    active_R: rows to decode in this call.
    budget_R: int32, the most tokens each row may produce in this call.
    keys_R: one PRNG key per row (the row's episode key).
    knobs: traced settings.
    cfg, new_bucket: static config and the column bucket N (>= knobs.max_steps).
  """
  params = rjm.decode_params(params, cfg)
  R, N = active_R.shape[0], new_bucket
  S = rows.cache.length
  out = Chunk(tokens_RN=jnp.full((R, N), knobs.pad_id, I32),
              logprobs_RN=jnp.zeros((R, N), F32), model_logprobs_RN=jnp.zeros((R, N), F32),
              count_R=jnp.zeros((R,), I32), stop_R=jnp.full((R,), -1, I32))
  running_R = active_R & (budget_R > 0)

  def cond(c):
    t, rows, _, running_R = c
    return ((t < N) & (t < knobs.max_steps) & jnp.any(running_R)
            & (rows.cache.index < S))

  def body(c):
    t, rows, out, running_R = c
    pos_R = jnp.where(running_R, rows.pos_R, -1)  # idle rows write a masked slot
    logits_R1V, cache = rjm.forward(params, rows.last_R[:, None], pos_R[:, None], cfg,
                                    rows.cache)
    logits_RV = logits_R1V[:, 0]
    step_keys = jax.vmap(jax.random.fold_in)(keys_R, rows.made_R)
    tok_R, lp_R = processors.sample(step_keys, logits_RV, knobs.temperature, knobs.top_k,
                                    knobs.top_p)
    model_lp_R = processors.token_logprobs(logits_RV, tok_R)
    run = running_R
    window = jnp.where(run[:, None], jnp.concatenate(
        [rows.window_RE[:, 1:], tok_R[:, None]], axis=1), rows.window_RE)
    hit_R = jnp.where(run, stop_hits(window, knobs.stop_QE, knobs.stop_len_Q), -1)
    count_R = out.count_R + run.astype(I32)
    out = Chunk(tokens_RN=_write(out.tokens_RN, t, jnp.where(run, tok_R, knobs.pad_id)),
                logprobs_RN=_write(out.logprobs_RN, t, jnp.where(run, lp_R, 0.0)),
                model_logprobs_RN=_write(out.model_logprobs_RN, t,
                                         jnp.where(run, model_lp_R, 0.0)),
                count_R=count_R, stop_R=jnp.where(hit_R >= 0, hit_R, out.stop_R))
    rows = Rows(cache=cache, last_R=jnp.where(run, tok_R, rows.last_R),
                pos_R=rows.pos_R + run.astype(I32), window_RE=window,
                made_R=rows.made_R + run.astype(I32))
    return t + 1, rows, out, run & (hit_R < 0) & (count_R < budget_R)

  with jax.named_scope("decode_chunk"):
    _, rows, out, _ = lax.while_loop(cond, body, (jnp.zeros((), I32), rows, out,
                                                  running_R))
  return rows, out


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnums=(1,))
def append(params, rows: Rows, seg_RM: jax.Array, seg_pos_RM: jax.Array,
           take_R: jax.Array, reset_R: jax.Array, last_R: jax.Array, pos_R: jax.Array, *,
           cfg: rjm.ModelConfig) -> Rows:
  """Prefill one segment per row into slots `[index, index + M)`; set the next token.

  Args:
    rows: the carried state (donated).
    seg_RM, seg_pos_RM: each row's new tokens and their positions (-1 on padding and
      on rows without a segment).
    take_R: rows whose next token becomes `last_R` at `pos_R` (the segment's rows).
    reset_R: rows starting a new episode: their old slots are cleared first, and
      their stop window and sampled-token count restart.
  """
  params = rjm.decode_params(params, cfg)
  cache = rows.cache
  cache = dataclasses.replace(cache, pos_BS=jnp.where(reset_R[:, None], -1, cache.pos_BS))
  with jax.named_scope("append"):
    _, cache = rjm.forward_hidden(params, seg_RM, seg_pos_RM, cfg, cache)
  return Rows(cache=cache, last_R=jnp.where(take_R, last_R, rows.last_R),
              pos_R=jnp.where(take_R, pos_R, rows.pos_R),
              window_RE=jnp.where((take_R | reset_R)[:, None], -1, rows.window_RE),
              made_R=jnp.where(reset_R, 0, rows.made_R))


@functools.partial(jax.jit, donate_argnums=(0,))
def compact(rows: Rows) -> Rows:
  """Each row's live slots (position >= 0) moved to the front, in slot order; the
  write index set just past the fullest row. Positions travel with their keys and
  values, so attention is unchanged."""
  cache = rows.cache
  live_BS = cache.pos_BS >= 0
  order_BS = jnp.argsort(~live_BS, axis=1, stable=True)
  take = lambda x: jnp.take_along_axis(x, order_BS[None, :, None, :, None], axis=3)  # noqa: E731
  pos_BS = jnp.take_along_axis(cache.pos_BS, order_BS, axis=1)
  index = jnp.max(jnp.sum(live_BS, axis=1)).astype(I32)
  cache = rjm.KVCache(k_LBKSH=take(cache.k_LBKSH), v_LBKSH=take(cache.v_LBKSH),
                      pos_BS=pos_BS, index=index)
  return dataclasses.replace(rows, cache=cache)
