"""The shared policy-gradient machinery: config base, PPO clip, regularisers, metrics.

Per-token loss of the clipped family (GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++, PSR/NSR):
  L_t = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))      rho = exp(l - l_old)
  optional dual clip for A < 0: L_t = min(L_t, -A c)
  + kl_coef * KL_t(pi || ref)  - entropy_coef * H_t
aggregated once with `agg` (regularisers share the policy loss's aggregation, as in verl
and tunix).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import aggregation
from reasoning_jax.objectives import kl as kl_lib
from reasoning_jax.objectives.types import (Array, Metric, ObjectiveInputs, Weighted,
                                            masked_metric, old_logp, token_advantages)


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
  """Fields shared by every policy-gradient objective (subclasses change defaults).

  Attributes:
    eps_low: lower clip, ratio >= 1 - eps_low.
    eps_high: upper clip, ratio <= 1 + eps_high.
    dual_clip_c: dual-clip bound c (> 1) for negative advantages; None disables it.
    kl_coef: weight of the KL-to-reference loss term (0 disables; needs ref_logp_BT).
    kl_estimator: "k1", "k2", "k3", "k3+" or "low_var_kl" (see kl.py).
    entropy_coef: weight of the entropy bonus (needs entropy_BT with gradient).
    agg: loss aggregation mode (aggregation.AGG_MODES).
    norm_const: the constant of "seq-sum-const" (max completion length); None means T.
    log_ratio_clamp: |log rho| is clamped to this before exp (overflow guard).

  `reference_fields` names the KL coefficients: a non-zero one needs the reference
  policy's log-probs, so the trainer keeps a reference (`reference_coefficients`).
  """
  reference_fields: ClassVar[tuple[str, ...]] = ("kl_coef",)
  eps_low: float = 0.2
  eps_high: float = 0.2
  dual_clip_c: float | None = None
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  entropy_coef: float = 0.0
  agg: str = "token-mean"
  norm_const: int | None = None
  log_ratio_clamp: float = 20.0

  def __post_init__(self):
    aggregation.check_agg_mode(self.agg)
    if self.kl_estimator not in kl_lib.KL_ESTIMATORS:
      raise ValueError(f"unknown kl_estimator {self.kl_estimator!r}; choose one of "
                       f"{kl_lib.KL_ESTIMATORS}")
    if self.eps_low is not None and self.eps_low < 0 or self.eps_high < 0:
      raise ValueError(f"clip ranges must be >= 0, got eps_low={self.eps_low}, "
                       f"eps_high={self.eps_high}")
    if self.dual_clip_c is not None and self.dual_clip_c <= 1.0:
      raise ValueError(f"dual_clip_c must be > 1, got {self.dual_clip_c}")


def log_ratio(inputs: ObjectiveInputs, clamp: float) -> Array:
  """Clamped log(pi / pi_old) per token, gradient through pi only."""
  return jnp.clip(inputs.logp_BT - old_logp(inputs), -clamp, clamp)


def clipped_surrogate(ratio_BT: Array, adv_BT: Array, eps_low: float, eps_high: float,
                      dual_clip_c: float | None) -> tuple[Array, dict[str, Array]]:
  """PPO clipped per-token loss and the boolean maps of where each clip is active."""
  clipped = jnp.clip(ratio_BT, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(-adv_BT * ratio_BT, -adv_BT * clipped)
  active = {
      "clipfrac_high": (adv_BT > 0) & (ratio_BT > 1.0 + eps_high),
      "clipfrac_low": (adv_BT < 0) & (ratio_BT < 1.0 - eps_low),
  }
  if dual_clip_c is not None:
    dual = (adv_BT < 0) & (-adv_BT * dual_clip_c < loss)
    loss = jnp.where(dual, -adv_BT * dual_clip_c, loss)
    active["dual_clipfrac"] = dual
  return loss, active


def regularizers(inputs: ObjectiveInputs, cfg: PolicyLossConfig) -> Array:
  """kl_coef * KL_t - entropy_coef * H_t per token (0 when both are off)."""
  reg = jnp.zeros_like(inputs.logp_BT)
  if cfg.kl_coef:
    if inputs.ref_logp_BT is None:
      raise ValueError(f"kl_coef={cfg.kl_coef} needs ObjectiveInputs.ref_logp_BT; pass "
                       f"the reference log-probs or set kl_coef=0")
    reg = reg + cfg.kl_coef * kl_lib.kl_estimate(inputs.logp_BT, inputs.ref_logp_BT,
                                                 cfg.kl_estimator)
  if cfg.entropy_coef:
    if inputs.entropy_BT is None:
      raise ValueError(f"entropy_coef={cfg.entropy_coef} needs ObjectiveInputs.entropy_BT "
                       f"(token entropy computed from logits, with gradient)")
    reg = reg - cfg.entropy_coef * inputs.entropy_BT
  return reg


def policy_metrics(inputs: ObjectiveInputs, ratio_BT: Array, adv_BT: Array,
                   active: dict[str, Array], cfg: PolicyLossConfig) -> dict[str, Metric]:
  """The metrics every policy loss reports (all merge exactly across micro-batches)."""
  m = inputs.mask_BT
  lr = jnp.log(jnp.maximum(ratio_BT, jnp.finfo(ratio_BT.dtype).tiny))
  out = {k: masked_metric(v.astype(m.dtype), m) for k, v in active.items()}
  out["approx_kl"] = masked_metric(ratio_BT - 1.0 - lr, m)  # k3 of KL(old || pi)
  out["ratio_mean"] = masked_metric(ratio_BT, m)
  out["ratio_max"] = masked_metric(ratio_BT, m, "max")
  out["ratio_min"] = masked_metric(ratio_BT, m, "min")
  out["adv_mean"] = masked_metric(adv_BT, m)
  out["adv_std"] = masked_metric(adv_BT, m, "std")
  out["adv_max"] = masked_metric(adv_BT, m, "max")
  out["adv_min"] = masked_metric(adv_BT, m, "min")
  out["nll"] = masked_metric(-inputs.logp_BT, m)
  if inputs.entropy_BT is not None:
    out["entropy"] = masked_metric(inputs.entropy_BT, m)
  if inputs.ref_logp_BT is not None:
    out["ref_kl"] = masked_metric(
        kl_lib.kl_estimate(inputs.logp_BT, inputs.ref_logp_BT, cfg.kl_estimator), m)
  out.update(group_metrics(inputs))
  return out


def group_metrics(inputs: ObjectiveInputs) -> dict[str, Metric]:
  """Share of zero-variance groups (all rewards equal), when rewards and G are known."""
  if inputs.rewards_B is None or inputs.group_size is None:
    return {}
  g = inputs.group_size
  r_NG = jax.lax.stop_gradient(inputs.rewards_B).reshape(-1, g)
  zero = jnp.all(r_NG == r_NG[:, :1], axis=-1).astype(jnp.float32)
  return {"zero_var_group_frac": Metric(jnp.sum(zero), jnp.asarray(zero.shape[0], jnp.float32),
                                        jnp.zeros(()))}


def loss_metric(w: Weighted) -> Metric:
  """A Weighted loss component as a mergeable metric."""
  t = jax.lax.stop_gradient(w.total)
  return Metric(t, jax.lax.stop_gradient(w.weight), jnp.zeros_like(t))


def clipped_policy_terms(inputs: ObjectiveInputs,
                         cfg: PolicyLossConfig) -> tuple[Weighted, dict[str, Metric]]:
  """The PPO-clip family loss: (Weighted loss, metrics). Inputs must be validated."""
  with jax.named_scope("clipped_policy_loss"):
    adv = token_advantages(inputs)
    ratio = jnp.exp(log_ratio(inputs, cfg.log_ratio_clamp))
    pg_BT, active = clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high,
                                      cfg.dual_clip_c)
    pg = aggregation.aggregate(pg_BT, inputs.mask_BT, cfg.agg, cfg.norm_const)
    loss = aggregation.aggregate(pg_BT + regularizers(inputs, cfg), inputs.mask_BT,
                                 cfg.agg, cfg.norm_const)
    metrics = policy_metrics(inputs, ratio, adv, active, cfg)
    metrics["pg_loss"] = loss_metric(pg)
    return loss, metrics
