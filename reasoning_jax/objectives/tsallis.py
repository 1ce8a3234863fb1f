"""Tsallis J_Q weight math shared by GARL and PAFT (Lin & Ie 2026), in log space.

For one prompt with M rationales z_m, w_m = p(y* | x, z_m) is the teacher-forced gold
answer likelihood, given as log w_m = a_m (the answer tokens' log-prob sum):
  log wbar     = logsumexp(a) - log M
  e_m          = exp(a_m - q log wbar)                   = w_m / wbar^q
  log wbar_-m  = logsumexp(a without m) - log(M - 1)
  c_m          = e_m - exp((1 - q) log wbar_-m)          (Eq. 12 RLOO coefficient)
Working in log space keeps e_m and c_m finite when every w_m underflows float32 (long
answers have log w of -100s). GARL and PAFT (garl.py, paft.py) import this module;
it imports neither.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from reasoning_jax.objectives.types import (Array, Metric, ObjectiveInputs, check_q,
                                            masked_metric)


def _as_groups(x: Array, name: str) -> Array:
  x = jax.lax.stop_gradient(jnp.asarray(x))
  if x.ndim < 1:
    raise ValueError(f"{name} must have a trailing group axis [..., M], got a scalar")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def log_mean_weight(log_w: Array) -> Array:
  """log mean_m w_m over the last axis, keepdims."""
  m = log_w.shape[-1]
  return jax.nn.logsumexp(log_w, axis=-1, keepdims=True) - math.log(m)


def leave_one_out_log_mean(log_w: Array) -> Array:
  """log mean_{j != m} w_j for each m (last axis), computed without subtraction."""
  m = log_w.shape[-1]
  if m < 2:
    raise ValueError(f"leave-one-out needs at least 2 rollouts per group, got M={m}")
  eye = jnp.eye(m, dtype=bool)
  masked = jnp.where(eye, -jnp.inf, log_w[..., None, :])  # [..., M(held out), M]
  return jax.nn.logsumexp(masked, axis=-1) - math.log(m - 1)


def garl_coefficients(answer_logprob_sums: Array, q: float) -> tuple[Array, Array]:
  """GARL's RLOO score coefficients c and pathwise coefficients e (no 1/M^q scaling).

  Args:
    answer_logprob_sums: log w_m, shape [M] (or [..., M] for many groups).
    q: Tsallis index in [0, 1].

  Returns:
    (c, e), each shaped like the input: e_m = w_m / wbar^q and
    c_m = e_m - wbar_{-m}^{1-q}. No gradient flows through them.
  """
  q = check_q(q)
  log_w = _as_groups(answer_logprob_sums, "answer_logprob_sums")
  e = plugin_coefficients(log_w, q)
  c = e - jnp.exp((1.0 - q) * leave_one_out_log_mean(log_w))
  return c, e


def plugin_coefficients(answer_logprob_sums: Array, q: float) -> Array:
  """e_m = w_m / wbar^q, the plug-in (Eq. 9) weight of each rollout."""
  q = check_q(q)
  log_w = _as_groups(answer_logprob_sums, "answer_logprob_sums")
  return jnp.exp(log_w - q * log_mean_weight(log_w))


def binary_coefficients(rewards: Array, q: float, eps: float = 1e-8) -> tuple[Array, Array]:
  """The verifier-reward variant: w_m := r_m in [0, 1], over the last axis.

  e_m = r_m / max(rbar, eps)^q and c_m = e_m - rbar_{-m}^{1-q}, both 0 for a group
  with rbar = 0 (no signal). 0^0 = 1 at q = 1, as the paper intends.
  """
  q = check_q(q)
  r = _as_groups(rewards, "rewards")
  m = r.shape[-1]
  if m < 2:
    raise ValueError(f"binary GARL needs at least 2 rollouts per group, got M={m}")
  total = jnp.sum(r, axis=-1, keepdims=True)
  rbar = total / m
  has = rbar > 0
  e = jnp.where(has, r / jnp.power(jnp.maximum(rbar, eps), q), 0.0)
  rbar_loo = jnp.maximum(total - r, 0.0) / (m - 1)
  c = jnp.where(has, e - jnp.power(rbar_loo, 1.0 - q), 0.0)
  return c, e


def paft_resample_counts(key: Array, log_w_GM: Array, num_samples: int) -> Array:
  """Counts n_m of K draws r_k ~ Cat(w / sum w) with replacement, per group.

  Args:
    key: PRNG key.
    log_w_GM: [G, M] (or [M]) log-weights; -inf marks weight 0. A group whose weights
      are all 0 gets all-zero counts (it is skipped).
    num_samples: K, the number of draws per group.

  Returns:
    int32 counts of the same shape, summing to K per group (or 0 for skipped groups).
  """
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples (K) must be a positive int, got {num_samples!r}")
  log_w = _as_groups(log_w_GM, "log_w_GM")
  squeeze = log_w.ndim == 1
  if squeeze:
    log_w = log_w[None]
  if log_w.ndim != 2:
    raise ValueError(f"log_w_GM must be [G, M] or [M], got {log_w.shape}")
  g, m = log_w.shape
  idx_GK = jax.random.categorical(key, log_w[:, None, :], axis=-1, shape=(g, num_samples))
  counts = jnp.sum(jax.nn.one_hot(idx_GK, m, dtype=jnp.int32), axis=1)
  alive = jnp.any(log_w > -jnp.inf, axis=-1, keepdims=True)
  counts = jnp.where(alive, counts, 0)
  return counts[0] if squeeze else counts


def rewards_to_log_weights(rewards: Array) -> Array:
  """log r for r in [0, 1] (log 0 = -inf), for resampling from the correct set."""
  r = jnp.asarray(rewards, jnp.float32)
  return jnp.where(r > 0, jnp.log(jnp.maximum(r, jnp.finfo(r.dtype).tiny)), -jnp.inf)


def rationale_answer_sums(inputs: ObjectiveInputs) -> tuple[Array, Array, Array, Array]:
  """(s_B, a_B, rationale mask, answer mask), the masks restricted to mask_BT."""
  rat = inputs.rationale_mask_BT * inputs.mask_BT
  ans = inputs.answer_mask_BT * inputs.mask_BT
  logp = inputs.logp_BT
  return jnp.sum(logp * rat, axis=-1), jnp.sum(logp * ans, axis=-1), rat, ans


def tsallis_metrics(log_w_NM: Array, inputs: ObjectiveInputs, rat: Array,
                    ans: Array) -> dict[str, Metric]:
  """Weight diagnostics: mean log wbar, effective-sample-size share, token NLLs."""
  n = jnp.asarray(log_w_NM.shape[0], jnp.float32)
  zero = jnp.zeros(())
  log_wbar = log_mean_weight(log_w_NM)[:, 0]
  # ESS / M = (sum w)^2 / (M sum w^2), in log space.
  m = log_w_NM.shape[-1]
  log_ess = 2 * jax.nn.logsumexp(log_w_NM, -1) - jax.nn.logsumexp(2 * log_w_NM, -1)
  ess_frac = jnp.exp(log_ess) / m
  return {
      "log_wbar": Metric(jnp.sum(log_wbar), n, jnp.sum(log_wbar**2), "mean"),
      "wbar": Metric(jnp.sum(jnp.exp(log_wbar)), n, zero),
      "ess_frac": Metric(jnp.sum(ess_frac), n, zero),
      "rationale_nll": masked_metric(-inputs.logp_BT, rat),
      "answer_nll": masked_metric(-inputs.logp_BT, ans),
  }
