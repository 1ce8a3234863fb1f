"""GRPO (DeepSeekMath) and Dr. GRPO.

GRPO: A_i = (r_i - mean_G r) / (std_G r + eps), PPO clip eps=0.2, k3 KL to the
reference with beta=0.04, seq-mean-token-mean aggregation.
Dr. GRPO: A_i = r_i - mean_G r, no KL, sum over tokens divided by a constant
(B * L_max: set `norm_const` to the max completion length).
"""
from __future__ import annotations

import dataclasses

from reasoning_jax.objectives import advantages as adv_lib
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import PolicyLossConfig, clipped_policy_terms
from reasoning_jax.objectives.types import ObjectiveInputs


@dataclasses.dataclass(frozen=True)
class GRPOConfig(PolicyLossConfig):
  """GRPO defaults. adv_eps and adv_ddof set the group std normalisation."""
  eps_low: float = 0.2
  eps_high: float = 0.2
  kl_coef: float = 0.04
  kl_estimator: str = "k3"
  agg: str = "seq-mean-token-mean"
  adv_eps: float = 1e-6
  adv_ddof: int = 1


@dataclasses.dataclass(frozen=True)
class DrGRPOConfig(PolicyLossConfig):
  """Dr. GRPO defaults: no std, no KL, seq-sum / (B * norm_const)."""
  eps_low: float = 0.2
  eps_high: float = 0.2
  kl_coef: float = 0.0
  agg: str = "seq-sum-const"


def grpo_prepare(inputs: ObjectiveInputs, cfg: GRPOConfig, key=None) -> ObjectiveInputs:
  """Group-normalised advantages from rewards_B."""
  del key
  return inputs.replace(advantages=adv_lib.group_normalized(
      inputs.rewards_B, inputs.group_size, cfg.adv_eps, cfg.adv_ddof))


def dr_grpo_prepare(inputs: ObjectiveInputs, cfg: DrGRPOConfig, key=None) -> ObjectiveInputs:
  """Mean-centred advantages from rewards_B."""
  del cfg, key
  return inputs.replace(advantages=adv_lib.mean_centered(inputs.rewards_B,
                                                         inputs.group_size))


_PREP = frozenset({"rewards_B"})

GRPO = Objective(
    name="grpo", config_cls=GRPOConfig, terms_fn=clipped_policy_terms,
    prepare_fn=grpo_prepare, needs=frozenset({"advantages"}), prepare_needs=_PREP,
    description="GRPO: group-normalised advantage, PPO clip, k3 KL, seq-mean-token-mean")
DR_GRPO = Objective(
    name="dr_grpo", config_cls=DrGRPOConfig, terms_fn=clipped_policy_terms,
    prepare_fn=dr_grpo_prepare, needs=frozenset({"advantages"}), prepare_needs=_PREP,
    description="Dr. GRPO: mean-centred advantage, PPO clip, token sum / (B * L_max)")
