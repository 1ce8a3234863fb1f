"""Sampling functions: temperature -> top-k -> top-p on float32 logits, all knobs traced.

Every knob is a traced scalar, so changing it never recompiles: temperature 0 means
greedy, top_k 0 means no top-k, top_p 1 means no nucleus. Top-k with a traced k sorts
the vocabulary once and masks by rank; the sort is skipped (`lax.cond`) when neither
truncation is on, because a full-vocabulary sort per step is the costliest part of a
small model's decode step.

A truncated distribution is kept in *sorted* order and sampled there, then mapped back
through the sort permutation: ties at the k-th logit are then broken by token id and
exactly k tokens survive, where a value threshold would keep every tied token.

Shape key: B rows, V vocab.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

F32 = jnp.float32
NEG_INF = -jnp.inf


def apply_temperature(logits_BV: jax.Array, temperature: jax.Array) -> jax.Array:
  """Logits divided by the temperature (a positive traced scalar), in float32."""
  return logits_BV.astype(F32) / jnp.asarray(temperature, F32)


def sort_and_truncate(logits_BV: jax.Array, top_k: jax.Array, top_p: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """Logits sorted descending with top-k then top-p applied, and the sort permutation.

  Args:
    logits_BV: float32 (already tempered) logits.
    top_k: int32 scalar; keep the k highest (0 = keep all).
    top_p: float32 scalar; then keep the smallest prefix of the (top-k renormalised)
      distribution whose mass reaches top_p (1 = keep all). The top token always stays.

  Returns:
    (masked_sorted_BV, perm_BV): sorted logits with removed entries at -inf, and the
    token id of each sorted entry (`perm_BV[b, j]` is the id of rank j).
  """
  B, V = logits_BV.shape
  iota_BV = lax.broadcasted_iota(jnp.int32, (B, V), 1)
  # Ascending sort of -logits with the ids riding along: stable, so ties keep id order.
  neg_sorted, perm_BV = lax.sort((-logits_BV, iota_BV), dimension=1, num_keys=1)
  sorted_BV = -neg_sorted
  keep_BV = (top_k <= 0) | (iota_BV < top_k)
  probs_BV = jax.nn.softmax(jnp.where(keep_BV, sorted_BV, NEG_INF), axis=-1)
  # Mass strictly before each rank; top_p >= 1 is an explicit "off" because the
  # float cumulative sum can reach 1.0 before the tail ends.
  before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
  keep_BV = keep_BV & ((top_p >= 1.0) | (before_BV < top_p) | (iota_BV == 0))
  return jnp.where(keep_BV, sorted_BV, NEG_INF), perm_BV


def processed_logprobs(logits_BV: jax.Array, temperature, top_k, top_p) -> jax.Array:
  """The full sampling distribution's log-probs `[B, V]` (in token order, -inf = removed).

  The reference for what `sample` draws from, used by tests and by callers that want
  the processed distribution itself. Temperature must be > 0 here (greedy is a point
  mass and has no useful log-density beyond 0 / -inf).
  """
  scaled_BV = apply_temperature(logits_BV, temperature)
  masked_sorted, perm_BV = sort_and_truncate(scaled_BV, jnp.asarray(top_k, jnp.int32),
                                             jnp.asarray(top_p, F32))
  logp_sorted = jax.nn.log_softmax(masked_sorted, axis=-1)
  rows = jnp.arange(logits_BV.shape[0])[:, None]
  return jnp.zeros_like(logp_sorted).at[rows, perm_BV].set(logp_sorted)


BLOCK = 256  # vocabulary entries per block of `argmax` and `draw`


def _blocks(x_BV: jax.Array, fill) -> jax.Array:
  """`x` as `[B, nb, BLOCK]`, the tail padded with `fill`."""
  B, V = x_BV.shape
  nb = -(-V // BLOCK)
  return jnp.pad(x_BV, ((0, 0), (0, nb * BLOCK - V)),
                 constant_values=fill).reshape(B, nb, BLOCK)


def _first(hit_BN: jax.Array) -> jax.Array:
  """The first index along the last axis where `hit` is True (int32; one must be)."""
  iota_BN = lax.broadcasted_iota(jnp.int32, hit_BN.shape, 1)
  return jnp.min(jnp.where(hit_BN, iota_BN, hit_BN.shape[1]), axis=-1)


def argmax(x_BV: jax.Array) -> jax.Array:
  """`jnp.argmax(x, axis=-1)` as int32: the first index of the maximum.

  Why not `jnp.argmax`: XLA:CPU runs its (value, index) reduction element by element
  (1.8 ms for [16, 49152], benchmarks/sampler.py's vocabulary). Here one pass takes
  each block's max, and only the small `[B, nb]` maxima and the winning block are
  searched for the first hit (0.15 ms). A row holding NaN gets an index in range,
  either a NaN's or the finite maximum's (XLA:CPU's max need not propagate NaN); its
  `token_logprobs` are NaN, which the trainer's health check reports.
  """
  x_BNK = _blocks(x_BV, -jnp.inf)
  bmax_BN = jnp.max(x_BNK, axis=-1)
  m_B = jnp.max(bmax_BN, axis=-1)
  blk_B = _first((bmax_BN == m_B[:, None]) | jnp.isnan(bmax_BN))
  row_BK = jnp.take_along_axis(x_BNK, blk_B[:, None, None], axis=1)[:, 0]
  return blk_B * BLOCK + _first((row_BK == m_B[:, None]) | jnp.isnan(row_BK))


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
  x_BNK = _blocks(logits_BV, -jnp.inf)
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
  row_BK = jnp.exp(jnp.take_along_axis(x_BNK, blk_B[:, None, None], axis=1)[:, 0]
                   - m_B[:, None])
  start_B = _take_rows(cdf_BN, blk_B) - _take_rows(mass_BN, blk_B)
  run_BK = jnp.cumsum(row_BK, axis=-1) + start_B[:, None]
  i_B = jnp.sum(run_BK <= t_B[:, None], axis=-1).astype(jnp.int32)
  # Rounding can leave t at or past the block's own running total: take the block's
  # last drawable token then (the block has one: its mass is positive).
  iota_BK = lax.broadcasted_iota(jnp.int32, row_BK.shape, 1)
  last_B = jnp.max(jnp.where(row_BK > 0, iota_BK, 0), axis=-1)
  tok_B = blk_B * BLOCK + jnp.where(i_B >= BLOCK, last_B, i_B)
  logp_B = _take_rows(logits_BV, tok_B) - m_B - jnp.log(cdf_BN[:, -1])
  return tok_B, logp_B


def _take_rows(x_BV: jax.Array, idx_B: jax.Array) -> jax.Array:
  return jnp.take_along_axis(x_BV, idx_B[:, None], axis=1)[:, 0]


def sample(keys_B, logits_BV: jax.Array, temperature, top_k, top_p
           ) -> tuple[jax.Array, jax.Array]:
  """Draw one token per row; return `(tokens_B int32, logprobs_B float32)`.

  `logprobs_B` is the log-probability of each drawn token under the distribution it
  was drawn from (tempered and truncated; 0 for greedy, a point mass).

  Args:
    keys_B: one PRNG key per row (typed keys or raw uint32 `[B, 2]`).
    logits_BV: the model's logits.
    temperature: traced scalar; <= 0 means greedy (argmax, first id on ties).
    top_k, top_p: traced scalars (see `sort_and_truncate`).
  """
  logits_BV = logits_BV.astype(F32)
  temperature = jnp.asarray(temperature, F32)
  top_k = jnp.asarray(top_k, jnp.int32)
  top_p = jnp.asarray(top_p, F32)

  def greedy(_):
    tok_B = argmax(logits_BV)
    return tok_B, jnp.zeros(tok_B.shape, F32)

  def plain(scaled_BV):
    return draw(keys_B, scaled_BV)

  def truncated(scaled_BV):
    # Drawn in sorted order (ties at the k-th logit broken by id), mapped back to ids.
    masked_sorted, perm_BV = sort_and_truncate(scaled_BV, top_k, top_p)
    j_B, logp_B = draw(keys_B, masked_sorted)
    return _take_rows(perm_BV, j_B), logp_B

  def stochastic(_):
    # The max(.., tiny) keeps the untaken greedy branch free of a division by zero.
    scaled_BV = apply_temperature(logits_BV, jnp.maximum(temperature, 1e-6))
    truncate = (top_k > 0) | (top_p < 1.0)
    return lax.cond(truncate, truncated, plain, scaled_BV)

  return lax.cond(temperature <= 0.0, greedy, stochastic, None)


def token_logprobs(logits_BV: jax.Array, tokens_B: jax.Array) -> jax.Array:
  """log softmax(logits)[token] per row: the unmodified model's log-probability."""
  logits_BV = logits_BV.astype(F32)
  lse_B = jax.nn.logsumexp(logits_BV, axis=-1)
  return _take_rows(logits_BV, tokens_B) - lse_B
