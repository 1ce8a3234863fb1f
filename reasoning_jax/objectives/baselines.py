"""REINFORCE, RLOO, REINFORCE++(-baseline) and PSR / NSR / W-REINFORCE.

- reinforce: plain -A l_t (no ratio, no clip), A = reward unless given; seq-mean-token-sum
  makes it the sequence-level REINFORCE estimator.
- rloo: A_i = r_i - mean_{j != i} r_j with the PPO clip (REINFORCE when on-policy),
  seq-mean-token-sum (the unbiased sequence-level leave-one-out estimator).
- reinforce_pp: token advantages r 1[last] - beta * KL reward-to-go (k1 KL in the
  reward), whitened over the global batch, PPO clip, token-mean.
- reinforce_pp_baseline: group mean subtracted from r first.
- psr / nsr / w_reinforce (Zhu et al.): +1 on correct only / -1 on incorrect only /
  lambda=0.1 and -1, no baseline, PPO clip, token-mean; PSR and NSR drop the other
  subset from the batch (mask and denominator).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import advantages as adv_lib
from reasoning_jax.objectives import aggregation
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import (PolicyLossConfig, clipped_policy_terms,
                                             log_ratio, loss_metric, policy_metrics,
                                             regularizers)
from reasoning_jax.objectives.types import (Metric, ObjectiveInputs, Weighted, old_logp,
                                            token_advantages)


@dataclasses.dataclass(frozen=True)
class ReinforceConfig(PolicyLossConfig):
  """Plain REINFORCE: the clip fields are unused."""
  agg: str = "seq-mean-token-sum"


@dataclasses.dataclass(frozen=True)
class RLOOConfig(PolicyLossConfig):
  """RLOO advantages with the PPO clip."""
  eps_low: float = 0.2
  eps_high: float = 0.2
  agg: str = "seq-mean-token-sum"


@dataclasses.dataclass(frozen=True)
class ReinforcePPConfig(PolicyLossConfig):
  """REINFORCE++: KL in the reward (reward_kl_coef, k1), no KL loss term."""
  reference_fields: ClassVar[tuple[str, ...]] = ("kl_coef", "reward_kl_coef")
  eps_low: float = 0.2
  eps_high: float = 0.2
  agg: str = "token-mean"
  reward_kl_coef: float = 0.001
  reward_kl_estimator: str = "k1"
  whiten_eps: float = 1e-8
  baseline: bool = False


@dataclasses.dataclass(frozen=True)
class ReinforcePPBaselineConfig(ReinforcePPConfig):
  """REINFORCE++-baseline: group mean subtracted before whitening."""
  baseline: bool = True


@dataclasses.dataclass(frozen=True)
class NegativeSampleConfig(PolicyLossConfig):
  """PSR / NSR / W-REINFORCE (verl PPO loss, kl_coef=0, token-mean)."""
  eps_low: float = 0.2
  eps_high: float = 0.2
  agg: str = "token-mean"
  mode: str = "w_reinforce"
  lam: float = 0.1
  correct_threshold: float = 0.5


@dataclasses.dataclass(frozen=True)
class PSRConfig(NegativeSampleConfig):
  """Positive-sample reinforcement only."""
  mode: str = "psr"


@dataclasses.dataclass(frozen=True)
class NSRConfig(NegativeSampleConfig):
  """Negative-sample reinforcement only."""
  mode: str = "nsr"


@dataclasses.dataclass(frozen=True)
class WReinforceConfig(NegativeSampleConfig):
  """W-REINFORCE: lambda on correct, -1 on incorrect."""
  mode: str = "w_reinforce"


def reinforce_terms(inputs: ObjectiveInputs,
                    cfg: ReinforceConfig) -> tuple[Weighted, dict[str, Metric]]:
  """Plain REINFORCE loss -A l_t (the ratio is only reported as a metric)."""
  adv = token_advantages(inputs)
  pg_BT = -adv * inputs.logp_BT
  pg = aggregation.aggregate(pg_BT, inputs.mask_BT, cfg.agg, cfg.norm_const)
  loss = aggregation.aggregate(pg_BT + regularizers(inputs, cfg), inputs.mask_BT, cfg.agg,
                               cfg.norm_const)
  ratio = jnp.exp(jax.lax.stop_gradient(log_ratio(inputs, cfg.log_ratio_clamp)))
  metrics = policy_metrics(inputs, ratio, adv, {}, cfg)
  metrics["pg_loss"] = loss_metric(pg)
  return loss, metrics


def reinforce_prepare(inputs: ObjectiveInputs, cfg, key=None) -> ObjectiveInputs:
  """A = reward (no baseline) unless advantages are already given."""
  del cfg, key
  if inputs.advantages is not None:
    return inputs
  if inputs.rewards_B is None:
    raise ValueError("reinforce.prepare needs rewards_B or advantages")
  return inputs.replace(advantages=inputs.rewards_B)


def rloo_prepare(inputs: ObjectiveInputs, cfg, key=None) -> ObjectiveInputs:
  """Leave-one-out advantages."""
  del cfg, key
  return inputs.replace(advantages=adv_lib.rloo(inputs.rewards_B, inputs.group_size))


def reinforce_pp_prepare(inputs: ObjectiveInputs, cfg: ReinforcePPConfig,
                         key=None) -> ObjectiveInputs:
  """Whitened KL-penalised reward-to-go advantages [B, T] over the whole batch.

  Raises ValueError when `reward_kl_coef` is non-zero and there are no reference
  log-probs: dropping the KL term would silently train another algorithm.
  """
  del key
  if cfg.reward_kl_coef and inputs.ref_logp_BT is None:
    raise ValueError(f"reward_kl_coef={cfg.reward_kl_coef} needs ObjectiveInputs."
                     "ref_logp_BT (the reference policy's log-probs); pass them, or set "
                     "reward_kl_coef=0")
  adv = adv_lib.reinforce_pp(inputs.rewards_B, inputs.mask_BT, old_logp(inputs),
                             inputs.ref_logp_BT, cfg.reward_kl_coef,
                             cfg.reward_kl_estimator, inputs.group_size, cfg.baseline,
                             cfg.whiten_eps)
  return inputs.replace(advantages=adv)


def negative_sample_prepare(inputs: ObjectiveInputs, cfg: NegativeSampleConfig,
                            key=None) -> ObjectiveInputs:
  """PSR/NSR/W-REINFORCE advantages; dropped rows leave the mask."""
  del key
  adv, keep = adv_lib.psr_nsr(inputs.rewards_B, cfg.mode, cfg.lam, cfg.correct_threshold)
  mask = inputs.mask_BT * keep.astype(inputs.mask_BT.dtype)[:, None]
  return inputs.replace(advantages=adv.astype(mask.dtype), mask_BT=mask)


_ADV = frozenset({"advantages"})
_REW = frozenset({"rewards_B"})
REINFORCE = Objective(
    name="reinforce", config_cls=ReinforceConfig, terms_fn=reinforce_terms,
    prepare_fn=reinforce_prepare, needs=_ADV,
    description="plain REINFORCE: -A * log pi, no ratio, no baseline unless given")
RLOO = Objective(
    name="rloo", config_cls=RLOOConfig, terms_fn=clipped_policy_terms,
    prepare_fn=rloo_prepare, needs=_ADV, prepare_needs=_REW,
    description="RLOO: leave-one-out baseline, PPO clip, sequence-level token sum")
REINFORCE_PP = Objective(
    name="reinforce_pp", config_cls=ReinforcePPConfig, terms_fn=clipped_policy_terms,
    prepare_fn=reinforce_pp_prepare, needs=_ADV, prepare_needs=_REW,
    description="REINFORCE++: k1 KL in the reward, global whitening, PPO clip")
REINFORCE_PP_BASELINE = Objective(
    name="reinforce_pp_baseline", config_cls=ReinforcePPBaselineConfig,
    terms_fn=clipped_policy_terms, prepare_fn=reinforce_pp_prepare, needs=_ADV,
    prepare_needs=_REW,
    description="REINFORCE++-baseline: group mean subtracted, then global whitening")
PSR = Objective(
    name="psr", config_cls=PSRConfig, terms_fn=clipped_policy_terms,
    prepare_fn=negative_sample_prepare, needs=_ADV, prepare_needs=_REW,
    description="positive-sample reinforcement: +1 on correct rollouts only")
NSR = Objective(
    name="nsr", config_cls=NSRConfig, terms_fn=clipped_policy_terms,
    prepare_fn=negative_sample_prepare, needs=_ADV, prepare_needs=_REW,
    description="negative-sample reinforcement: -1 on incorrect rollouts only")
W_REINFORCE = Objective(
    name="w_reinforce", config_cls=WReinforceConfig, terms_fn=clipped_policy_terms,
    prepare_fn=negative_sample_prepare, needs=_ADV, prepare_needs=_REW,
    description="W-REINFORCE: lambda=0.1 on correct, -1 on incorrect")
