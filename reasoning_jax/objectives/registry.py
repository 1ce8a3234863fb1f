"""`OBJECTIVES`: name -> `Objective`, the table gin configs choose from."""
from __future__ import annotations

from types import MappingProxyType

from reasoning_jax.objectives import (baselines, cispo, dapo, distill, garl, gppo, grpo, gspo,
                                      paft, sft)
from reasoning_jax.objectives.objective import Objective

_ALL = (
    grpo.GRPO, grpo.DR_GRPO, dapo.DAPO, gspo.GSPO, gspo.GSPO_TOKEN, cispo.CISPO,
    gppo.GPPO, baselines.REINFORCE, baselines.RLOO, baselines.REINFORCE_PP,
    baselines.REINFORCE_PP_BASELINE, baselines.PSR, baselines.NSR, baselines.W_REINFORCE,
    garl.GARL, garl.GARL_BINARY, paft.PAFT, paft.PAFT_BINARY, sft.SFT,
    distill.DISTILL, distill.GRPO_DISTILL, distill.GARL_DISTILL,
)

OBJECTIVES: MappingProxyType[str, Objective] = MappingProxyType({o.name: o for o in _ALL})


def get_objective(name: str) -> Objective:
  """The objective called `name`, with a clear error listing the known names."""
  try:
    return OBJECTIVES[name]
  except KeyError:
    raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}") from None
