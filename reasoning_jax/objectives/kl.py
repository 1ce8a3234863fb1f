"""KL estimators (Schulman's k1/k2/k3) as a loss term or as a per-token reward penalty.

With log r = ref - logp on tokens sampled from pi_theta:
  k1 = -log r               unbiased KL(pi||ref) value; zero expected gradient as a loss
  k2 = (log r)^2 / 2        biased value; its gradient is grad KL(pi||ref)
  k3 = r - 1 - log r        unbiased, low variance value; gradient of KL(ref||pi)
  k3+                       k3's value with k2's gradient (verl "k3+", straight-through)
  low_var_kl                k3 clamped to [-10, 10] (verl)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from reasoning_jax.objectives.types import Array

KL_ESTIMATORS = ("k1", "k2", "k3", "k3+", "low_var_kl")
# exp() of a larger log-ratio overflows float32; frameworks clamp at +-20 as well.
_LOG_RATIO_CLAMP = 20.0


def kl_estimate(logp_BT: Array, ref_logp_BT: Array, kind: str = "k3") -> Array:
  """Per-token KL estimate between the policy (logp, with grad) and the reference."""
  if kind not in KL_ESTIMATORS:
    raise ValueError(f"unknown KL estimator {kind!r}; choose one of {KL_ESTIMATORS}")
  ref = jax.lax.stop_gradient(ref_logp_BT)
  log_r = jnp.clip(ref - logp_BT, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
  if kind == "k1":
    return -log_r
  k2 = 0.5 * log_r * log_r
  if kind == "k2":
    return k2
  k3 = jnp.exp(log_r) - 1.0 - log_r
  if kind == "k3":
    return k3
  if kind == "k3+":
    return k2 + jax.lax.stop_gradient(k3 - k2)
  return jnp.clip(k3, -10.0, 10.0)


def last_token_onehot(mask_BT: Array) -> Array:
  """One-hot of the last unmasked token of each row (all zero for an empty row)."""
  T = mask_BT.shape[-1]
  pos_T = jnp.arange(T, dtype=jnp.int32)
  on = mask_BT > 0
  last_B = jnp.max(jnp.where(on, pos_T[None, :], -1), axis=-1)
  return (pos_T[None, :] == last_B[:, None]).astype(mask_BT.dtype) * on.astype(mask_BT.dtype)


def kl_penalized_token_rewards(rewards_B: Array, mask_BT: Array, old_logp_BT: Array,
                               ref_logp_BT: Array, beta: float,
                               kind: str = "k1") -> Array:
  """Token rewards: the scalar reward on the last token minus beta * KL on every token.

  This is the "KL in the reward" use (REINFORCE++, PPO). The KL uses the behaviour
  log-probs and carries no gradient.
  """
  kl_BT = jax.lax.stop_gradient(kl_estimate(old_logp_BT, ref_logp_BT, kind))
  m = mask_BT.astype(old_logp_BT.dtype)
  return rewards_B[:, None] * last_token_onehot(m) - beta * kl_BT * m


def reward_to_go(token_rewards_BT: Array, mask_BT: Array, gamma: float = 1.0) -> Array:
  """sum_{s>=t} gamma^(s-t) r_s over unmasked tokens, 0 on masked ones."""
  r = token_rewards_BT * mask_BT

  def step(carry, r_t):
    carry = r_t + gamma * carry
    return carry, carry

  _, rtg_TB = jax.lax.scan(step, jnp.zeros_like(r[:, 0]), r.T, reverse=True)
  return rtg_TB.T * mask_BT
