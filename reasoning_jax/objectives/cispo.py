"""CISPO (MiniMax-M1): REINFORCE with a truncated, stop-gradient IS weight.

  L = -sum_{i,t} sg(clip(rho_it, 1 - eps_low, 1 + eps_high)) A_it l_it / sum_i |o_i|

No token's gradient is dropped (unlike the PPO clip). MiniMax disables the lower clip
and tunes the upper one: eps_low=None means no lower bound, and eps_high=4.0 gives the
ScaleRL/TRL cap rho <= 5. verl's two-sided variant is eps_low=eps_high=0.2.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import aggregation
from reasoning_jax.objectives.grpo import grpo_prepare
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import (PolicyLossConfig, log_ratio, loss_metric,
                                             policy_metrics, regularizers)
from reasoning_jax.objectives.types import Metric, ObjectiveInputs, Weighted, token_advantages


@dataclasses.dataclass(frozen=True)
class CISPOConfig(PolicyLossConfig):
  """CISPO defaults: one-sided cap at 1 + eps_high = 5, token-mean, GRPO advantages."""
  eps_low: float | None = None
  eps_high: float = 4.0
  kl_coef: float = 0.0
  agg: str = "token-mean"
  adv_eps: float = 1e-6
  adv_ddof: int = 1


def cispo_terms(inputs: ObjectiveInputs,
                cfg: CISPOConfig) -> tuple[Weighted, dict[str, Metric]]:
  """CISPO loss and metrics."""
  adv = token_advantages(inputs)
  ratio = jnp.exp(log_ratio(inputs, cfg.log_ratio_clamp))
  lo = 0.0 if cfg.eps_low is None else 1.0 - cfg.eps_low
  weight = jax.lax.stop_gradient(jnp.clip(ratio, lo, 1.0 + cfg.eps_high))
  pg_BT = -weight * adv * inputs.logp_BT
  pg = aggregation.aggregate(pg_BT, inputs.mask_BT, cfg.agg, cfg.norm_const)
  loss = aggregation.aggregate(pg_BT + regularizers(inputs, cfg), inputs.mask_BT, cfg.agg,
                               cfg.norm_const)
  active = {"clipfrac_high": ratio > 1.0 + cfg.eps_high, "clipfrac_low": ratio < lo}
  metrics = policy_metrics(inputs, ratio, adv, active, cfg)
  metrics["pg_loss"] = loss_metric(pg)
  return loss, metrics


CISPO = Objective(
    name="cispo", config_cls=CISPOConfig, terms_fn=cispo_terms, prepare_fn=grpo_prepare,
    needs=frozenset({"advantages"}), prepare_needs=frozenset({"rewards_B"}),
    description="CISPO: stop-gradient truncated IS weight times REINFORCE, token-mean")
