"""PAFT (Lin & Ie 2026, Eq. 14 / Alg. 2) and its verifier-reward variant.

prepare: resample K rationales per prompt, r_k ~ Cat(w / sum w), from the answer
log-likelihoods a_m of a no-gradient forward pass (old_logp_BT on answer tokens, or the
current log-probs when absent); store the counts n_m.
loss:    L = -sg(wbar^(1-q)) sum_m (n_m / K) (s_m + a_m)   (times M^-q, Alg. 2)
i.e. teacher-forced SFT on (rationale, gold answer), per prompt, mean over prompts.
E[L's gradient | pool] equals GARL's plug-in gradient.

paft_binary: w_m := r_m; K uniform draws from the correct set, weight rbar^(1-q), SFT
on the sampled completions; a group with rbar = 0 contributes nothing (but still counts
in the mean over prompts, as its estimator value is 0).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reasoning_jax.objectives import tsallis
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.policy import loss_metric
from reasoning_jax.objectives.types import (Metric, ObjectiveInputs, Weighted,
                                            check_group_size, check_q, masked_metric,
                                            old_logp)


@dataclasses.dataclass(frozen=True)
class PAFTConfig:
  """PAFT hyper-parameters.

  Attributes:
    q: Tsallis index in [0, 1] (1 = EM / TRICE, 0 = wbar-weighted SFT).
    num_samples: K draws per prompt; None means K = M (the paper).
    scale_by_m_q: multiply by 1 / M^q (Alg. 2).
  """
  q: float = 0.75
  num_samples: int | None = None
  scale_by_m_q: bool = True

  def __post_init__(self):
    check_q(self.q)
    if self.num_samples is not None and self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1 or None, got {self.num_samples}")


def _k(cfg: PAFTConfig, m: int) -> int:
  return m if cfg.num_samples is None else cfg.num_samples


def _group_valid(mask_BT, m: int):
  """[N] 1.0 for groups with at least one unmasked token."""
  row = (jnp.sum(mask_BT, axis=-1) > 0).astype(mask_BT.dtype)
  return (jnp.sum(row.reshape(-1, m), axis=-1) > 0).astype(mask_BT.dtype)


def paft_prepare(inputs: ObjectiveInputs, cfg: PAFTConfig, key) -> ObjectiveInputs:
  """Resample counts from the gold-answer likelihoods of the whole batch."""
  m = check_group_size(inputs.logp_BT.shape[0], inputs.group_size)
  ans = inputs.answer_mask_BT * inputs.mask_BT
  a_B = jnp.sum(old_logp(inputs) * ans, axis=-1)
  counts = tsallis.paft_resample_counts(key, a_B.reshape(-1, m), _k(cfg, m))
  return inputs.replace(resample_counts_B=counts.reshape(-1).astype(inputs.logp_BT.dtype))


def paft_terms(inputs: ObjectiveInputs,
               cfg: PAFTConfig) -> tuple[Weighted, dict[str, Metric]]:
  """PAFT surrogate: (Weighted loss over prompts, metrics)."""
  m = check_group_size(inputs.logp_BT.shape[0], inputs.group_size)
  s_B, a_B, rat, ans = tsallis.rationale_answer_sums(inputs)
  log_w_NM = jax.lax.stop_gradient(a_B).reshape(-1, m)
  wq_N = jnp.exp((1.0 - cfg.q) * tsallis.log_mean_weight(log_w_NM)[:, 0])
  scale = float(m) ** (-cfg.q) if cfg.scale_by_m_q else 1.0
  n_NM = jax.lax.stop_gradient(inputs.resample_counts_B).reshape(-1, m)
  coef_NM = wq_N[:, None] * n_NM / _k(cfg, m) * scale
  per_prompt_N = -jnp.sum(coef_NM * (s_B + a_B).reshape(-1, m), axis=-1)
  loss = Weighted(jnp.sum(per_prompt_N), jnp.sum(_group_valid(rat + ans, m)))
  metrics = tsallis.tsallis_metrics(log_w_NM, inputs, rat, ans)
  metrics["distinct_resampled_frac"] = masked_metric(
      (n_NM > 0).astype(coef_NM.dtype), jnp.ones_like(coef_NM))
  metrics["sft_nll"] = loss_metric(loss)
  return loss, metrics


@dataclasses.dataclass(frozen=True)
class PAFTBinaryConfig(PAFTConfig):
  """PAFT with verifier rewards (q = 1 is STaR / RAFT)."""


def paft_binary_prepare(inputs: ObjectiveInputs, cfg: PAFTBinaryConfig,
                        key) -> ObjectiveInputs:
  """Counts of K draws from the correct set (proportional to r in [0, 1])."""
  m = check_group_size(inputs.logp_BT.shape[0], inputs.group_size)
  log_w = tsallis.rewards_to_log_weights(inputs.rewards_B.reshape(-1, m))
  counts = tsallis.paft_resample_counts(key, log_w, _k(cfg, m))
  return inputs.replace(resample_counts_B=counts.reshape(-1).astype(inputs.logp_BT.dtype))


def paft_binary_terms(inputs: ObjectiveInputs,
                      cfg: PAFTBinaryConfig) -> tuple[Weighted, dict[str, Metric]]:
  """-sg(rbar^(1-q)) (1/K) sum_k sum_t l_t over the completion, mean over prompts."""
  m = check_group_size(inputs.logp_BT.shape[0], inputs.group_size)
  r_NM = jax.lax.stop_gradient(inputs.rewards_B).reshape(-1, m)
  rbar_N = jnp.mean(r_NM, axis=-1)
  w_N = jnp.where(rbar_N > 0, jnp.power(jnp.maximum(rbar_N, 1e-30), 1.0 - cfg.q), 0.0)
  scale = float(m) ** (-cfg.q) if cfg.scale_by_m_q else 1.0
  n_NM = jax.lax.stop_gradient(inputs.resample_counts_B).reshape(-1, m)
  seq_B = jnp.sum(inputs.logp_BT * inputs.mask_BT, axis=-1)
  coef_NM = w_N[:, None] * n_NM / _k(cfg, m) * scale
  per_prompt_N = -jnp.sum(coef_NM * seq_B.reshape(-1, m), axis=-1)
  loss = Weighted(jnp.sum(per_prompt_N), jnp.sum(_group_valid(inputs.mask_BT, m)))
  ones = jnp.ones_like(rbar_N)
  metrics = {
      "rbar": masked_metric(rbar_N, ones),
      "skipped_group_frac": masked_metric((rbar_N <= 0).astype(ones.dtype), ones),
      "nll": masked_metric(-inputs.logp_BT, inputs.mask_BT),
      "sft_nll": loss_metric(loss),
  }
  return loss, metrics


_T = frozenset({"rationale_mask_BT", "answer_mask_BT"})
PAFT = Objective(
    name="paft", config_cls=PAFTConfig, terms_fn=paft_terms, prepare_fn=paft_prepare,
    needs=_T | {"resample_counts_B"}, prepare_needs=_T, needs_key=True,
    description="PAFT: weighted resampling of rationales, SFT on rationale + gold answer")
PAFT_BINARY = Objective(
    name="paft_binary", config_cls=PAFTBinaryConfig, terms_fn=paft_binary_terms,
    prepare_fn=paft_binary_prepare, needs=frozenset({"rewards_B", "resample_counts_B"}),
    prepare_needs=frozenset({"rewards_B"}), needs_key=True,
    description="PAFT with verifier rewards: SFT on K draws from the correct set")
