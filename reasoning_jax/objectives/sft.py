"""SFT: token negative log-likelihood over the mask (warm starts, PAFT's inner loss)."""
from __future__ import annotations

import dataclasses

from reasoning_jax.objectives import aggregation
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.types import Metric, ObjectiveInputs, Weighted, masked_metric


@dataclasses.dataclass(frozen=True)
class SFTLossConfig:
  """SFT aggregation: token-mean by default (see aggregation.AGG_MODES)."""
  agg: str = "token-mean"
  norm_const: int | None = None

  def __post_init__(self):
    aggregation.check_agg_mode(self.agg)


def sft_terms(inputs: ObjectiveInputs,
              cfg: SFTLossConfig) -> tuple[Weighted, dict[str, Metric]]:
  """-log p of the masked tokens, aggregated with cfg.agg."""
  loss = aggregation.aggregate(-inputs.logp_BT, inputs.mask_BT, cfg.agg, cfg.norm_const)
  return loss, {"nll": masked_metric(-inputs.logp_BT, inputs.mask_BT)}


SFT = Objective(name="sft", config_cls=SFTLossConfig, terms_fn=sft_terms,
                description="SFT: token NLL over the mask")
