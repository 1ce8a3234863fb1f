"""GARL (Lin & Ie 2026, Eq. 9 / Eq. 12 / Alg. 1) and its verifier-reward variant.

Surrogate per prompt (each rollout is the forward pass over [x*, z_m, y*]):
  s_m = sum of log-probs over rationale tokens, a_m = over the gold-answer tokens
  rloo:    L = -(1/M) sum_m [sg(c_m) s_m + sg(e_m) a_m]        (autodiff gives Eq. 12)
  plugin:  L = -(1/M) sum_m sg(e_m) (s_m + a_m)                (Eq. 9)
  times M^-q when `scale_by_m_q` (Alg. 1). Token *sum* within a sequence, mean over the
  M rollouts and the prompts: another aggregation changes the estimator.
The weights come from stop_gradient(a_m) of this very forward pass, so a micro-batch
must hold whole groups.

garl_binary: w_m := r_m, the score term over the sampled completion only (no pathwise
term), optionally inside the PPO clip (c_m as the advantage).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import aggregation
from reasoning_jax.objectives import tsallis
from reasoning_jax.objectives.baselines import reinforce_terms
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import PolicyLossConfig, clipped_policy_terms, loss_metric
from reasoning_jax.objectives.types import (Metric, ObjectiveInputs, Weighted,
                                            check_group_size, check_q, masked_metric)

ESTIMATORS = ("rloo", "plugin")


@dataclasses.dataclass(frozen=True)
class GARLConfig:
  """GARL hyper-parameters.

  Attributes:
    q: Tsallis index in [0, 1] (0 = RLVR / RB-RLOO, 1 = marginal likelihood / IWAE).
    estimator: "rloo" (Eq. 12, the paper's experiments) or "plugin" (Eq. 9).
    scale_by_m_q: multiply by 1 / M^q (Alg. 1: effective rewards in [0, 1]).
  """
  q: float = 0.75
  estimator: str = "rloo"
  scale_by_m_q: bool = True

  def __post_init__(self):
    check_q(self.q)
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"unknown GARL estimator {self.estimator!r}; choose {ESTIMATORS}")


@dataclasses.dataclass(frozen=True)
class GARLBinaryConfig(PolicyLossConfig):
  """Verifier-reward GARL: q, the M^-q scaling, and optional PPO clipping."""
  q: float = 0.75
  scale_by_m_q: bool = True
  use_clip: bool = False
  agg: str = "seq-mean-token-sum"

  def __post_init__(self):
    super().__post_init__()
    check_q(self.q)


def garl_terms(inputs: ObjectiveInputs,
               cfg: GARLConfig) -> tuple[Weighted, dict[str, Metric]]:
  """GARL surrogate: (Weighted loss over rows, metrics)."""
  B = inputs.logp_BT.shape[0]
  m = check_group_size(B, inputs.group_size)
  s_B, a_B, rat, ans = tsallis.rationale_answer_sums(inputs)
  log_w_NM = jax.lax.stop_gradient(a_B).reshape(-1, m)
  if cfg.estimator == "rloo":
    c_NM, e_NM = tsallis.garl_coefficients(log_w_NM, cfg.q)
  else:
    e_NM = tsallis.plugin_coefficients(log_w_NM, cfg.q)
    c_NM = e_NM
  scale = float(m) ** (-cfg.q) if cfg.scale_by_m_q else 1.0
  c_B, e_B = c_NM.reshape(-1) * scale, e_NM.reshape(-1) * scale
  row_B = -(c_B * s_B + e_B * a_B)
  loss = aggregation.aggregate_seq(row_B, rat + ans)
  metrics = tsallis.tsallis_metrics(log_w_NM, inputs, rat, ans)
  ones = jnp.ones_like(c_B)
  metrics["coef_c_mean"] = masked_metric(c_B, ones)
  metrics["coef_c_std"] = masked_metric(c_B, ones, "std")
  metrics["coef_e_max"] = masked_metric(e_B, ones, "max")
  metrics["score_loss"] = loss_metric(aggregation.aggregate_seq(-c_B * s_B, rat + ans))
  return loss, metrics


def garl_binary_prepare(inputs: ObjectiveInputs, cfg: GARLBinaryConfig,
                        key=None) -> ObjectiveInputs:
  """Advantages c_m (times M^-q) from verifier rewards in [0, 1]."""
  del key
  m = check_group_size(inputs.logp_BT.shape[0], inputs.group_size)
  c_NM, _ = tsallis.binary_coefficients(inputs.rewards_B.reshape(-1, m), cfg.q)
  scale = float(m) ** (-cfg.q) if cfg.scale_by_m_q else 1.0
  return inputs.replace(advantages=(c_NM * scale).reshape(-1).astype(inputs.logp_BT.dtype))


def garl_binary_terms(inputs: ObjectiveInputs,
                      cfg: GARLBinaryConfig) -> tuple[Weighted, dict[str, Metric]]:
  """-(1/M) sum_m sg(c_m) sum_t l_t, or the PPO clip with c as the advantage."""
  if cfg.use_clip:
    return clipped_policy_terms(inputs, cfg)
  return reinforce_terms(inputs, cfg)


_TSALLIS_NEEDS = frozenset({"rationale_mask_BT", "answer_mask_BT"})
GARL = Objective(
    name="garl", config_cls=GARLConfig, terms_fn=garl_terms, needs=_TSALLIS_NEEDS,
    description="GARL: Tsallis J_Q, RLOO score term on rationale + pathwise on gold answer")
GARL_BINARY = Objective(
    name="garl_binary", config_cls=GARLBinaryConfig, terms_fn=garl_binary_terms,
    prepare_fn=garl_binary_prepare, needs=frozenset({"advantages"}),
    prepare_needs=frozenset({"rewards_B"}),
    description="GARL with verifier rewards w = r: score term on the sampled completion")
