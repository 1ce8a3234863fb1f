"""On-policy distillation: the reverse KL to a teacher on the student's own samples, and
its KDRL-style mixes with GRPO and GARL.

The student samples y ~ pi_theta; a teacher scores the same tokens (`teacher_logp_BT`).
Per token t, with l_t = log pi_theta(y_t | x, y_<t), l^T_t the teacher's log-prob and
l^old_t the sampler's (old policy; on-policy it is sg(l_t)):

  A_t = sg(l^T_t - l^old_t)                 = -(log p_s - log p_t): per-token advantage
  d_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps_low, 1 + eps_high))    rho_t = e^(l - l^old)

On-policy (rho = 1) the value of d_t is l_t - l^T_t, the k1 estimate of the reverse KL
KL(pi_theta(.|x, y_<t) || teacher(.|x, y_<t)) at the token's prefix, and its gradient is
(l_t - l^T_t) grad l_t, whose expectation over y_t ~ pi_theta is exactly the gradient of
that KL (sum_y p grad log p = 0). The sampled token's effect on later prefixes is not
credited (discount 0), as in on-policy distillation. Why the sampled-token estimator and
not the exact KL over the vocabulary: docs/decisions/0026.

  distill:       L = agg(d_t [+ kl_coef KL_t(ref) - entropy_coef H_t]), token-mean
  grpo_distill:  GRPO's loss + distill_coef * agg(d_t), in GRPO's aggregation (KDRL)
  garl_distill:  GARL's loss + distill_coef * mean over rows of sum_{t in rationale} d_t
                 (the gold answer is teacher-forced, not a student sample: no term there)

Each mix adds the distillation term over the same mask and aggregation as its base
loss, so both have the same denominator and micro-batches still add exactly.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import aggregation, tsallis
from reasoning_jax.objectives.garl import GARLConfig, garl_terms
from reasoning_jax.objectives.grpo import GRPOConfig, grpo_prepare
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import (PolicyLossConfig, clipped_policy_terms,
                                             clipped_surrogate, loss_metric)
from reasoning_jax.objectives.types import (Array, Metric, ObjectiveInputs, Weighted,
                                            masked_metric, old_logp)


@dataclasses.dataclass(frozen=True)
class DistillConfig(PolicyLossConfig):
  """Pure on-policy distillation: the PPO-clip fields (the clip acts only when
  `RLConfig.epochs` or `minibatches` > 1), token-mean, no reference KL."""
  kl_coef: float = 0.0
  agg: str = "token-mean"


def _check_coef(coef: float) -> None:
  if not coef >= 0.0:
    raise ValueError(f"distill_coef must be >= 0 (the weight of the reverse-KL term), "
                     f"got {coef}")


@dataclasses.dataclass(frozen=True)
class GRPODistillConfig(GRPOConfig):
  """GRPO plus `distill_coef` times the distillation term (KDRL). GRPO's reference KL
  is off by default: the teacher term takes its place."""
  kl_coef: float = 0.0
  distill_coef: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    _check_coef(self.distill_coef)


@dataclasses.dataclass(frozen=True)
class GARLDistillConfig(GARLConfig):
  """GARL plus `distill_coef` times the distillation term on the rationale tokens."""
  distill_coef: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    _check_coef(self.distill_coef)


def distill_advantages(inputs: ObjectiveInputs) -> Array:
  """A_t = sg(l^T_t - l^old_t): the negated per-token reverse-KL estimate, no gradient
  (0 on masked tokens, which `validate` zeroed in every log-prob)."""
  return jax.lax.stop_gradient(inputs.teacher_logp_BT - old_logp(inputs))


def distill_token_loss(inputs: ObjectiveInputs, clamp: float, eps_low: float | None,
                       eps_high: float | None) -> Array:
  """d_t of the module docstring; with `eps_low` None the ratio is not clipped."""
  adv = distill_advantages(inputs)
  ratio = jnp.exp(jnp.clip(inputs.logp_BT - old_logp(inputs), -clamp, clamp))
  if eps_low is None:
    return -adv * ratio
  return clipped_surrogate(ratio, adv, eps_low, eps_high, None)[0]


def distill_metrics(inputs: ObjectiveInputs, mask_BT: Array) -> dict[str, Metric]:
  """`distill_kl` (the k1 reverse-KL estimate per token, l^old - l^T) and
  `teacher_nll` over `mask_BT`."""
  return {"distill_kl": masked_metric(-distill_advantages(inputs), mask_BT),
          "teacher_nll": masked_metric(-inputs.teacher_logp_BT, mask_BT)}


def distill_terms(inputs: ObjectiveInputs,
                  cfg: DistillConfig) -> tuple[Weighted, dict[str, Metric]]:
  """The PPO-clip loss with the per-token distillation advantage (and the config's
  optional KL / entropy regularisers)."""
  loss, metrics = clipped_policy_terms(
      inputs.replace(advantages=distill_advantages(inputs)), cfg)
  metrics.update(distill_metrics(inputs, inputs.mask_BT))
  return loss, metrics


def grpo_distill_terms(inputs: ObjectiveInputs,
                       cfg: GRPODistillConfig) -> tuple[Weighted, dict[str, Metric]]:
  """GRPO's loss plus distill_coef times the distillation loss in GRPO's aggregation."""
  base, metrics = clipped_policy_terms(inputs, cfg)
  d = aggregation.aggregate(
      distill_token_loss(inputs, cfg.log_ratio_clamp, cfg.eps_low, cfg.eps_high),
      inputs.mask_BT, cfg.agg, cfg.norm_const)
  metrics.update(distill_metrics(inputs, inputs.mask_BT))
  metrics["distill_loss"] = loss_metric(d)
  # Same mask, same mode: d.weight == base.weight, so the totals add exactly.
  return Weighted(base.total + cfg.distill_coef * d.total, base.weight), metrics


def garl_distill_terms(inputs: ObjectiveInputs,
                       cfg: GARLDistillConfig) -> tuple[Weighted, dict[str, Metric]]:
  """GARL's loss plus distill_coef times the per-row sum of d_t over the rationale."""
  base, metrics = garl_terms(inputs, cfg)
  _, _, rat, ans = tsallis.rationale_answer_sums(inputs)
  d_BT = distill_token_loss(inputs, PolicyLossConfig.log_ratio_clamp, None, None)
  d = aggregation.aggregate_seq(jnp.sum(d_BT * rat, axis=-1), rat + ans)
  metrics.update(distill_metrics(inputs, rat))
  metrics["distill_loss"] = loss_metric(d)
  return Weighted(base.total + cfg.distill_coef * d.total, base.weight), metrics


_TEACHER = frozenset({"teacher_logp_BT"})
DISTILL = Objective(
    name="distill", config_cls=DistillConfig, terms_fn=distill_terms, needs=_TEACHER,
    description="on-policy distillation: per-token reverse KL to a teacher, "
                "advantage -(log p_s - log p_t)")
GRPO_DISTILL = Objective(
    name="grpo_distill", config_cls=GRPODistillConfig, terms_fn=grpo_distill_terms,
    prepare_fn=grpo_prepare, needs=_TEACHER | {"advantages"},
    prepare_needs=frozenset({"rewards_B"}),
    description="KDRL: GRPO plus distill_coef x the on-policy distillation term")
GARL_DISTILL = Objective(
    name="garl_distill", config_cls=GARLDistillConfig, terms_fn=garl_distill_terms,
    needs=_TEACHER | {"rationale_mask_BT", "answer_mask_BT"},
    description="GARL plus distill_coef x the on-policy distillation term on rationales")
