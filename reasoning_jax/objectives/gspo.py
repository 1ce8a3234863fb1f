"""GSPO (sequence-level importance ratio) and GSPO-token.

  s_i = exp(mean_t (l_it - l_old_it)),  log s_i clamped <= 10 (verl)
  GSPO:       L = mean_i max(-A_i s_i, -A_i clip(s_i, 1 - eps_l, 1 + eps_h))
  GSPO-token: log s_it = sg(log s_i) + l_it - sg(l_it), clipped per token with A_it,
              seq-mean-token-mean; equal to GSPO in value and gradient when A is per
              sequence.
Clip range eps_l = 3e-4, eps_h = 4e-4 (the frameworks' 0.2 default is wrong for GSPO).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import aggregation
from reasoning_jax.objectives.grpo import grpo_prepare
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import (PolicyLossConfig, clipped_surrogate,
                                             loss_metric, policy_metrics, regularizers)
from reasoning_jax.objectives.types import (Array, Metric, ObjectiveInputs, Weighted,
                                            old_logp, token_advantages)


@dataclasses.dataclass(frozen=True)
class GSPOConfig(PolicyLossConfig):
  """GSPO defaults; advantages are GRPO's (adv_eps, adv_ddof)."""
  eps_low: float = 3e-4
  eps_high: float = 4e-4
  kl_coef: float = 0.0
  agg: str = "seq-mean-token-mean"
  adv_eps: float = 1e-6
  adv_ddof: int = 1
  seq_log_ratio_max: float = 10.0


def seq_log_ratio(inputs: ObjectiveInputs, cfg: GSPOConfig) -> Array:
  """[B] length-normalised sequence log-ratio, clamped above (gradient through logp)."""
  m = inputs.mask_BT
  diff = (inputs.logp_BT - old_logp(inputs)) * m
  lr = jnp.sum(diff, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
  return jnp.minimum(lr, cfg.seq_log_ratio_max)


def gspo_terms(inputs: ObjectiveInputs, cfg: GSPOConfig) -> tuple[Weighted, dict[str, Metric]]:
  """Sequence-level GSPO loss; needs per-sequence advantages [B]."""
  if cfg.agg != "seq-mean-token-mean":
    raise ValueError("GSPO is a mean over sequences; use agg='seq-mean-token-mean' "
                     "(or the gspo_token objective for other aggregations)")
  if inputs.advantages.ndim != 1:
    raise ValueError("GSPO needs per-sequence advantages [B]; use gspo_token for [B, T]")
  adv_B = jax.lax.stop_gradient(inputs.advantages)
  s_B = jnp.exp(seq_log_ratio(inputs, cfg))
  loss_B, active_B = clipped_surrogate(s_B, adv_B, cfg.eps_low, cfg.eps_high,
                                       cfg.dual_clip_c)
  pg = aggregation.aggregate_seq(loss_B, inputs.mask_BT)
  reg = aggregation.aggregate(regularizers(inputs, cfg), inputs.mask_BT, cfg.agg)
  shape = inputs.logp_BT.shape
  bcast = lambda x: jnp.broadcast_to(x[:, None], shape)  # noqa: E731
  metrics = policy_metrics(inputs, bcast(s_B), bcast(adv_B),
                           {k: bcast(v) for k, v in active_B.items()}, cfg)
  metrics["pg_loss"] = loss_metric(pg)
  return Weighted(pg.total + reg.total, pg.weight), metrics


def gspo_token_terms(inputs: ObjectiveInputs,
                     cfg: GSPOConfig) -> tuple[Weighted, dict[str, Metric]]:
  """GSPO-token: per-token ratio with the sequence ratio's value; any advantage shape."""
  adv = token_advantages(inputs)
  lr_B = jax.lax.stop_gradient(seq_log_ratio(inputs, cfg))
  logp = inputs.logp_BT
  ratio = jnp.exp(lr_B[:, None] + logp - jax.lax.stop_gradient(logp))
  pg_BT, active = clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high, cfg.dual_clip_c)
  pg = aggregation.aggregate(pg_BT, inputs.mask_BT, cfg.agg, cfg.norm_const)
  loss = aggregation.aggregate(pg_BT + regularizers(inputs, cfg), inputs.mask_BT, cfg.agg,
                               cfg.norm_const)
  metrics = policy_metrics(inputs, ratio, adv, active, cfg)
  metrics["pg_loss"] = loss_metric(pg)
  return loss, metrics


_PREP = frozenset({"rewards_B"})
GSPO = Objective(
    name="gspo", config_cls=GSPOConfig, terms_fn=gspo_terms, prepare_fn=grpo_prepare,
    needs=frozenset({"advantages"}), prepare_needs=_PREP,
    description="GSPO: sequence-level ratio, clip 3e-4/4e-4, mean over sequences")
GSPO_TOKEN = Objective(
    name="gspo_token", config_cls=GSPOConfig, terms_fn=gspo_token_terms,
    prepare_fn=grpo_prepare, needs=frozenset({"advantages"}), prepare_needs=_PREP,
    description="GSPO-token: per-token ratio carrying the sequence ratio's value")
