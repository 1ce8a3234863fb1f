"""In-graph sampling: one jitted prefill + `lax.while_loop` decode, traced sampling knobs.

Entry point: `generate(params, config, prompts, key=..., max_new_tokens=...)`.
"""
from reasoning_jax.sampling.budget import ThinkingBudget
from reasoning_jax.sampling.generate import SampleCall, bucket, generate, left_pad, plan_call
from reasoning_jax.sampling.processors import processed_logprobs, sample, token_logprobs
from reasoning_jax.sharding.rollout import RolloutSharding
from reasoning_jax.sampling.state import (BUDGET, FINISH_REASONS, LENGTH, RUNNING, STOP,
                                          DecodeState, SampleOutput)
from reasoning_jax.sampling.vocab import truncate

__all__ = [
    "BUDGET", "DecodeState", "FINISH_REASONS", "LENGTH", "RUNNING", "RolloutSharding",
    "STOP", "SampleCall", "SampleOutput", "ThinkingBudget", "bucket", "generate",
    "left_pad", "plan_call",
    "processed_logprobs", "sample", "token_logprobs", "truncate",
]
