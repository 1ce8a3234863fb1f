"""Klear GPPO: clip-higher in the forward pass, bounded gradients through clipped tokens.

  L_t = max(-A rho, -A clip(rho, (1 - eps_l) rho / sg(rho), (1 + eps_h) rho / sg(rho)))

The clip bounds equal 1 - eps_l and 1 + eps_h in value, so the forward pass is DAPO's,
but a clipped token keeps the gradient -(1 + eps_h) A grad l (A > 0, rho > 1 + eps_h) or
-(1 - eps_l) A grad l (A < 0, rho < 1 - eps_l) instead of zero. The general form's
beta1 = beta2 = 1. verl's dual clip (c = 3, constant value, no gradient) applies to A < 0.
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
class GPPOConfig(PolicyLossConfig):
  """GPPO defaults: eps 0.2 / 0.28, dual clip 3, no KL, token-mean, GRPO advantages."""
  eps_low: float = 0.2
  eps_high: float = 0.28
  dual_clip_c: float | None = 3.0
  kl_coef: float = 0.0
  agg: str = "token-mean"
  adv_eps: float = 1e-6
  adv_ddof: int = 1


def gppo_terms(inputs: ObjectiveInputs,
               cfg: GPPOConfig) -> tuple[Weighted, dict[str, Metric]]:
  """GPPO loss and metrics."""
  adv = token_advantages(inputs)
  ratio = jnp.exp(log_ratio(inputs, cfg.log_ratio_clamp))
  unit = ratio / jax.lax.stop_gradient(ratio)  # value 1, gradient grad(l)
  lo, hi = (1.0 - cfg.eps_low) * unit, (1.0 + cfg.eps_high) * unit
  clipped = jnp.minimum(jnp.maximum(ratio, lo), hi)
  pg_BT = jnp.maximum(-adv * ratio, -adv * clipped)
  active = {"clipfrac_high": (adv > 0) & (ratio > 1.0 + cfg.eps_high),
            "clipfrac_low": (adv < 0) & (ratio < 1.0 - cfg.eps_low)}
  if cfg.dual_clip_c is not None:
    dual = (adv < 0) & (-adv * cfg.dual_clip_c < pg_BT)
    pg_BT = jnp.where(dual, -adv * cfg.dual_clip_c, pg_BT)
    active["dual_clipfrac"] = dual
  pg = aggregation.aggregate(pg_BT, inputs.mask_BT, cfg.agg, cfg.norm_const)
  loss = aggregation.aggregate(pg_BT + regularizers(inputs, cfg), inputs.mask_BT, cfg.agg,
                               cfg.norm_const)
  metrics = policy_metrics(inputs, ratio, adv, active, cfg)
  metrics["pg_loss"] = loss_metric(pg)
  return loss, metrics


GPPO = Objective(
    name="gppo", config_cls=GPPOConfig, terms_fn=gppo_terms, prepare_fn=grpo_prepare,
    needs=frozenset({"advantages"}), prepare_needs=frozenset({"rewards_B"}),
    description="Klear GPPO: clip-higher forward, bounded gradient through clipped tokens")
