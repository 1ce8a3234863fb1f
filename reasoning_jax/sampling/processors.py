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


def _gumbel_rows(keys_B, shape_BV) -> jax.Array:
  """Standard Gumbel noise `[B, V]`, each row from its own key (so a row's draw ignores
  the batch). `argmax(logits + noise)` is one categorical draw per row."""
  return jax.vmap(lambda k: jax.random.gumbel(k, shape_BV[1:], F32))(keys_B)


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
    tok_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    return tok_B, jnp.zeros(tok_B.shape, F32)

  # One noise draw serves both sampling branches (compiled once, not per branch);
  # ranks are a permutation of token ids, so sorted-order noise is as iid as ever.
  def plain(args):
    scaled_BV, noise_BV = args
    tok_B = jnp.argmax(scaled_BV + noise_BV, axis=-1).astype(jnp.int32)
    return tok_B, _take_rows(jax.nn.log_softmax(scaled_BV, axis=-1), tok_B)

  def truncated(args):
    scaled_BV, noise_BV = args
    masked_sorted, perm_BV = sort_and_truncate(scaled_BV, top_k, top_p)
    j_B = jnp.argmax(masked_sorted + noise_BV, axis=-1).astype(jnp.int32)
    logp_B = _take_rows(jax.nn.log_softmax(masked_sorted, axis=-1), j_B)
    return _take_rows(perm_BV, j_B), logp_B

  def stochastic(_):
    # The max(.., tiny) keeps the untaken greedy branch free of a division by zero.
    scaled_BV = apply_temperature(logits_BV, jnp.maximum(temperature, 1e-6))
    truncate = (top_k > 0) | (top_p < 1.0)
    noise_BV = _gumbel_rows(keys_B, scaled_BV.shape)
    return lax.cond(truncate, truncated, plain, (scaled_BV, noise_BV))

  return lax.cond(temperature <= 0.0, greedy, stochastic, None)


def token_logprobs(logits_BV: jax.Array, tokens_B: jax.Array) -> jax.Array:
  """log softmax(logits)[token] per row: the unmodified model's log-probability."""
  logits_BV = logits_BV.astype(F32)
  lse_B = jax.nn.logsumexp(logits_BV, axis=-1)
  return _take_rows(logits_BV, tokens_B) - lse_B
