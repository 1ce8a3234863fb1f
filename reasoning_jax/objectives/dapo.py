"""DAPO: clip-higher, token-mean, overlong reward shaping, dynamic-sampling filter.

The filter and the shaping are reward-shape math, so they live here as pure functions
(jnp, usable on host arrays too). The trainer over-samples groups until enough survive
`dynamic_sampling_keep`; `prepare` additionally removes any zero-variance group left in
the batch from the loss (mask and denominator), which is what dropping it would do.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from reasoning_jax.objectives import advantages as adv_lib
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import PolicyLossConfig, clipped_policy_terms
from reasoning_jax.objectives.types import Array, ObjectiveInputs, check_group_size


@dataclasses.dataclass(frozen=True)
class DAPOConfig(PolicyLossConfig):
  """DAPO defaults (paper): clip 0.2 / 0.28, no KL, token-mean over the batch.

  Attributes:
    filter_groups: drop groups whose rewards are all equal (all correct / all wrong).
    overlong_max_len: L_max of the soft overlong penalty; None disables shaping.
    overlong_cache_len: L_cache, the length of the linear penalty ramp.
    overlong_penalty: the penalty at and beyond L_max (1.0 in the paper).
  """
  eps_low: float = 0.2
  eps_high: float = 0.28
  kl_coef: float = 0.0
  agg: str = "token-mean"
  adv_eps: float = 1e-6
  adv_ddof: int = 1
  filter_groups: bool = True
  overlong_max_len: int | None = 20480
  overlong_cache_len: int = 4096
  overlong_penalty: float = 1.0


def overlong_reward_shaping(lengths_B: Array, max_len: int, cache_len: int,
                            penalty: float = 1.0) -> Array:
  """DAPO's soft overlong penalty (<= 0), added to the reward.

  0 if |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache * penalty if
  |y| <= L_max; -penalty beyond.
  """
  if not 0 < cache_len <= max_len:
    raise ValueError(f"need 0 < overlong_cache_len <= overlong_max_len, got "
                     f"{cache_len} and {max_len}")
  lengths = jnp.asarray(lengths_B, jnp.float32)
  start = float(max_len - cache_len)
  ramp = (start - lengths) / float(cache_len) * penalty
  return jnp.where(lengths <= start, 0.0, jnp.where(lengths <= max_len, ramp, -penalty))


def dynamic_sampling_keep(rewards_B: Array, group_size: int) -> Array:
  """[N] bool, True for groups with a learning signal (rewards not all equal).

  For correctness rewards this is DAPO's 0 < #correct < G.
  """
  return ~adv_lib.zero_variance_groups(rewards_B, group_size)


def keep_rows(keep_N: Array, group_size: int) -> Array:
  """Expands a per-group keep flag to rows: [N] -> [N * G]."""
  return jnp.repeat(jnp.asarray(keep_N), group_size)


def dapo_prepare(inputs: ObjectiveInputs, cfg: DAPOConfig, key=None) -> ObjectiveInputs:
  """Shaped rewards -> group-normalised advantages; filtered groups leave the loss.

  The overlong length is the number of loss-mask tokens of each row (the completion
  length when the mask covers the whole completion).
  """
  del key
  g = check_group_size(inputs.logp_BT.shape[0], inputs.group_size)
  rewards = inputs.rewards_B
  shaped = rewards
  if cfg.overlong_max_len is not None:
    lengths = jnp.sum(inputs.mask_BT, axis=-1)
    shaped = rewards + overlong_reward_shaping(lengths, cfg.overlong_max_len,
                                               cfg.overlong_cache_len,
                                               cfg.overlong_penalty).astype(rewards.dtype)
  adv = adv_lib.group_normalized(shaped, g, cfg.adv_eps, cfg.adv_ddof)
  mask = inputs.mask_BT
  if cfg.filter_groups:
    # Filter on the correctness reward, before shaping, as DAPO does.
    keep = keep_rows(dynamic_sampling_keep(rewards, g), g).astype(mask.dtype)
    mask = mask * keep[:, None]
  return inputs.replace(advantages=adv, mask_BT=mask)


DAPO = Objective(
    name="dapo", config_cls=DAPOConfig, terms_fn=clipped_policy_terms,
    prepare_fn=dapo_prepare, needs=frozenset({"advantages"}),
    prepare_needs=frozenset({"rewards_B"}),
    description="DAPO: clip-higher 0.2/0.28, token-mean, overlong shaping, group filter")
