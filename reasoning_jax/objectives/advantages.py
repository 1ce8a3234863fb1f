"""Advantages from rewards: GRPO, Dr. GRPO, RLOO, REINFORCE++(-baseline), PSR/NSR/W-REINFORCE.

Rewards are `rewards_B` with the G rollouts of a prompt in consecutive rows. All functions
are pure jnp and carry no gradient (rewards are data).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import kl as kl_lib
from reasoning_jax.objectives.types import Array, check_group_size


def _groups(rewards_B: Array, group_size: int, min_size: int = 1) -> Array:
  rewards_B = jax.lax.stop_gradient(jnp.asarray(rewards_B))
  if rewards_B.ndim != 1:
    raise ValueError(f"rewards must have shape [B], got {rewards_B.shape}")
  check_group_size(rewards_B.shape[0], group_size)
  if group_size < min_size:
    raise ValueError(f"this advantage needs group_size >= {min_size}, got {group_size}")
  if not jnp.issubdtype(rewards_B.dtype, jnp.floating):
    rewards_B = rewards_B.astype(jnp.float32)
  return rewards_B.reshape(-1, group_size)


def group_normalized(rewards_B: Array, group_size: int, eps: float = 1e-6,
                     ddof: int = 1) -> Array:
  """GRPO: (r - mean_G r) / (std_G r + eps), Bessel-corrected std by default (ddof=1).

  A zero-variance group gets exactly 0 (never 0/0, whatever eps).
  """
  r_NG = _groups(rewards_B, group_size, min_size=1 + ddof)
  mean = jnp.mean(r_NG, axis=-1, keepdims=True)
  std = jnp.std(r_NG, axis=-1, keepdims=True, ddof=ddof)
  safe = jnp.where(std > 0, std + eps, 1.0)
  return jnp.where(std > 0, (r_NG - mean) / safe, 0.0).reshape(-1)


def mean_centered(rewards_B: Array, group_size: int) -> Array:
  """Dr. GRPO: r - mean_G r (no std normalisation)."""
  r_NG = _groups(rewards_B, group_size)
  return (r_NG - jnp.mean(r_NG, axis=-1, keepdims=True)).reshape(-1)


def rloo(rewards_B: Array, group_size: int) -> Array:
  """RLOO: r_i - mean_{j != i} r_j = (G r_i - sum r) / (G - 1)."""
  r_NG = _groups(rewards_B, group_size, min_size=2)
  g = group_size
  return ((g * r_NG - jnp.sum(r_NG, axis=-1, keepdims=True)) / (g - 1)).reshape(-1)


def zero_variance_groups(rewards_B: Array, group_size: int) -> Array:
  """[N] bool: groups whose rewards are all equal (no learning signal for GRPO/RLOO)."""
  r_NG = _groups(rewards_B, group_size)
  return jnp.all(r_NG == r_NG[:, :1], axis=-1)


def masked_whiten(x_BT: Array, mask_BT: Array, eps: float = 1e-8, ddof: int = 1) -> Array:
  """(x - mean) / sqrt(var + eps) over unmasked entries of the whole batch (verl)."""
  m = mask_BT.astype(x_BT.dtype)
  n = jnp.sum(m)
  mean = jnp.sum(x_BT * m) / jnp.maximum(n, 1.0)
  var = jnp.sum(jnp.square(x_BT - mean) * m) / jnp.maximum(n - ddof, 1.0)
  return (x_BT - mean) * jax.lax.rsqrt(var + eps) * m


def reinforce_pp(rewards_B: Array, mask_BT: Array, old_logp_BT: Array,
                 ref_logp_BT: Array | None, kl_coef: float = 0.001, kl_kind: str = "k1",
                 group_size: int | None = None, baseline: bool = False,
                 eps: float = 1e-8) -> Array:
  """REINFORCE++ token advantages, whitened over the global batch.

  A_t = r 1[t = last] - kl_coef * sum_{s >= t} KL_s, then masked whitening. With
  `baseline=True` (REINFORCE++-baseline) the group mean reward is subtracted first.
  A non-zero `kl_coef` without `ref_logp_BT` is an error, never a silent kl_coef=0.
  """
  if ref_logp_BT is None and kl_coef != 0.0:
    raise ValueError(f"reinforce_pp with kl_coef={kl_coef} needs ref_logp_BT; pass the "
                     "reference log-probs or set kl_coef=0")
  rewards_B = jax.lax.stop_gradient(jnp.asarray(rewards_B)).astype(old_logp_BT.dtype)
  if baseline:
    rewards_B = mean_centered(rewards_B, group_size)
  m = mask_BT.astype(old_logp_BT.dtype)
  if kl_coef == 0.0:
    token_r = rewards_B[:, None] * kl_lib.last_token_onehot(m)
  else:
    token_r = kl_lib.kl_penalized_token_rewards(rewards_B, m, old_logp_BT, ref_logp_BT,
                                                kl_coef, kl_kind)
  return masked_whiten(kl_lib.reward_to_go(token_r, m), m, eps=eps)


def psr_nsr(rewards_B: Array, mode: str, lam: float = 0.1,
            threshold: float = 0.5) -> tuple[Array, Array]:
  """Zhu et al. negative-sample reinforcement advantages, no baseline and no std.

  Args:
    rewards_B: scores; a rollout is correct when its score > threshold ({0,1} or +-1).
    mode: "psr" (+1 on correct, incorrect rows dropped), "nsr" (-1 on incorrect, correct
      rows dropped) or "w_reinforce" (lam on correct, -1 on incorrect, all kept).
    lam: W-REINFORCE's positive weight.
    threshold: correctness threshold on the score.

  Returns:
    (advantages_B, keep_B): keep_B is 0 for rows that leave the batch (they must also
    leave the loss denominator, so the caller multiplies them into the mask).
  """
  r = jax.lax.stop_gradient(jnp.asarray(rewards_B, jnp.float32))
  correct = r > threshold
  one = jnp.ones_like(r)
  if mode == "psr":
    return jnp.where(correct, 1.0, 0.0), correct.astype(r.dtype)
  if mode == "nsr":
    return jnp.where(correct, 0.0, -1.0), (~correct).astype(r.dtype)
  if mode == "w_reinforce":
    return jnp.where(correct, lam, -1.0), one
  raise ValueError(f"unknown mode {mode!r}; choose 'psr', 'nsr' or 'w_reinforce'")
