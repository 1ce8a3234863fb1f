"""RL post-training objectives: pure JAX losses returning (loss, metrics).

See docs/objectives.md for the calling convention. The registry `OBJECTIVES` maps names
(grpo, dr_grpo, dapo, gspo, gspo_token, cispo, gppo, reinforce, rloo, reinforce_pp,
reinforce_pp_baseline, psr, nsr, w_reinforce, garl, garl_binary, paft, paft_binary, sft,
distill, grpo_distill, garl_distill)
to `Objective` handles.
"""
from reasoning_jax.objectives.aggregation import (AGG_MODES, accumulate_value_and_grad,
                                                  aggregate)
from reasoning_jax.objectives.objective import (Objective, reference_coefficients,
                                                reference_fields)
from reasoning_jax.objectives.registry import OBJECTIVES, get_objective
from reasoning_jax.objectives.types import (Metric, ObjectiveInputs, Weighted,
                                            merge_metrics, metric_values)

__all__ = [
    "AGG_MODES", "OBJECTIVES", "Metric", "Objective", "ObjectiveInputs", "Weighted",
    "accumulate_value_and_grad", "aggregate", "get_objective", "merge_metrics",
    "metric_values", "reference_coefficients", "reference_fields",
]
