"""Sampling functions: temperature -> top-k -> top-p on float32 logits, all knobs traced.

Every knob is a traced scalar, so changing it never recompiles: temperature 0 means
greedy, top_k 0 means no top-k, top_p 1 means no nucleus. Truncation (`vocab.truncate`,
no sort) is skipped by a `lax.cond` when neither is on. A draw is an inverse-CDF
lookup with one uniform per row (`draw`).

Shape key: B rows, V vocab.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


from reasoning_jax.sampling import vocab

F32 = jnp.float32


def apply_temperature(logits_BV: jax.Array, temperature: jax.Array) -> jax.Array:
  """Logits divided by the temperature (a positive traced scalar), in float32."""
  return logits_BV.astype(F32) / jnp.asarray(temperature, F32)


def processed_logprobs(logits_BV: jax.Array, temperature, top_k, top_p) -> jax.Array:
  """The full sampling distribution's log-probs `[B, V]` (in token order, -inf = removed).

  The reference for what `sample` draws from, used by tests and by callers that want
  the processed distribution itself. Temperature must be > 0 here (greedy is a point
  mass and has no useful log-density beyond 0 / -inf).
  """
  scaled_BV = apply_temperature(logits_BV, temperature)
  masked_BV = vocab.truncate(scaled_BV, jnp.asarray(top_k, jnp.int32),
                             jnp.asarray(top_p, F32))
  return jax.nn.log_softmax(masked_BV, axis=-1)


def draw(keys_B, logits_BV: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One draw per row from `softmax(logits)` and its log-probability.

  Inverse-CDF sampling in two levels: one uniform per row picks a block of `BLOCK`
  tokens by the running sum of block masses, then a token by the running sum inside
  that block. A token of probability 0 (logit -inf) is never drawn. Why not Gumbel-max:
  it needs one random number per vocabulary entry, and threefry on CPU made that the
  costliest part of a sampled decode step (6.8 ms at [16, 49152] and 48 ms at
  [64, 49152], against 0.5 ms and 1.7 ms here). Each row uses only its own key.

  Args:
    keys_B: one PRNG key per row.
    logits_BV: float32 logits; -inf entries are excluded.

  Returns:
    `(tokens_B int32, logprobs_B float32)`.
  """
  x_BNK = vocab.blocks(logits_BV, -jnp.inf)
  nb = x_BNK.shape[1]
  m_B = jnp.max(jnp.max(x_BNK, axis=-1), axis=-1)
  w_BNK = jnp.exp(x_BNK - m_B[:, None, None])  # unnormalised probabilities, 0 at -inf
  mass_BN = jnp.sum(w_BNK, axis=-1)
  cdf_BN = jnp.cumsum(mass_BN, axis=-1)
  u_B = jax.vmap(lambda k: jax.random.uniform(k, (), F32))(keys_B)
  # u <= 1 - 2**-23, so t rounds below the total: some block's running sum exceeds it.
  t_B = u_B * cdf_BN[:, -1]
  blk_B = jnp.minimum(jnp.sum(cdf_BN <= t_B[:, None], axis=-1), nb - 1).astype(jnp.int32)
  # The block's weights are recomputed from its logits, so the full `w` is only
  # summed and never written out.
  row_BK = jnp.exp(vocab.take(x_BNK, blk_B) - m_B[:, None])
  start_B = vocab.take(cdf_BN, blk_B) - vocab.take(mass_BN, blk_B)
  run_BK = jnp.cumsum(row_BK, axis=-1) + start_B[:, None]
  i_B = jnp.sum(run_BK <= t_B[:, None], axis=-1).astype(jnp.int32)
  # Rounding can leave t at or past the block's own running total: take the block's
  # last drawable token then (the block has one: its mass is positive).
  iota_BK = lax.broadcasted_iota(jnp.int32, row_BK.shape, 1)
  last_B = jnp.max(jnp.where(row_BK > 0, iota_BK, 0), axis=-1)
  tok_B = blk_B * vocab.BLOCK + jnp.where(i_B >= vocab.BLOCK, last_B, i_B)
  logp_B = vocab.take(logits_BV, tok_B) - m_B - jnp.log(cdf_BN[:, -1])
  return tok_B, logp_B


def sample(keys_B, logits_BV: jax.Array, temperature, top_k, top_p, *,
           step=None) -> tuple[jax.Array, jax.Array]:
  """Draw one token per row; return `(tokens_B int32, logprobs_B float32)`.

  `logprobs_B` is the log-probability of each drawn token under the distribution it
  was drawn from (tempered and truncated; 0 for greedy, a point mass).

  Args:
    keys_B: one PRNG key per row (typed keys or raw uint32 `[B, 2]`).
    logits_BV: the model's logits.
    temperature: traced scalar; <= 0 means greedy (argmax, first id on ties).
    top_k, top_p: traced scalars (see `vocab.truncate`).
    step: optional traced int; the keys used are then `fold_in(keys_B[i], step)`,
      derived only when sampling (a greedy decode step skipped ~70 us of threefry at
      16 rows on a 2-core CPU, docs/benchmarks.md).
  """
  logits_BV = logits_BV.astype(F32)
  temperature = jnp.asarray(temperature, F32)
  top_k = jnp.asarray(top_k, jnp.int32)
  top_p = jnp.asarray(top_p, F32)

  def greedy(_):
    tok_B = vocab.argmax(logits_BV)
    return tok_B, jnp.zeros(tok_B.shape, F32)

  def plain(scaled_BV, keys_B):
    return draw(keys_B, scaled_BV)

  def truncated(scaled_BV, keys_B):
    return draw(keys_B, vocab.truncate(scaled_BV, top_k, top_p))

  def stochastic(_):
    keys = keys_B if step is None else jax.vmap(jax.random.fold_in, in_axes=(0, None))(
        keys_B, step)
    # The max(.., tiny) keeps the untaken greedy branch free of a division by zero.
    scaled_BV = apply_temperature(logits_BV, jnp.maximum(temperature, 1e-6))
    truncate = (top_k > 0) | (top_p < 1.0)
    return lax.cond(truncate, truncated, plain, scaled_BV, keys)

  return lax.cond(temperature <= 0.0, greedy, stochastic, None)


def token_logprobs(logits_BV: jax.Array, tokens_B: jax.Array) -> jax.Array:
  """log softmax(logits)[token] per row: the unmodified model's log-probability."""
  logits_BV = logits_BV.astype(F32)
  return vocab.take(logits_BV, tokens_B) - jax.nn.logsumexp(logits_BV, axis=-1)
