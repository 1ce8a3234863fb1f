"""Scoring a batch of completions, each with its own example's verifier."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from reasoning_jax.rewards.runner import RewardRunner


def score_examples(examples: Sequence[Any], texts: Sequence[str], lengths: Sequence[int],
                   runner: RewardRunner) -> tuple[np.ndarray, dict[str, float]]:
  """Score completion i with the verifier of `examples[i]`; returns (float32 scores,
  outcome counts keyed `reward/<reason>`).

  An example provides `reward` and `reward_kwargs` (which verifier), `make_reward()`
  and `reward_item(text, length)`. Completions are scored in one batch per distinct
  verifier. A failed item is never a silent 0: it scores 0 and its reason (timeout,
  exception, unparsable gold) is counted.
  """
  by_reward: dict[tuple, list[int]] = defaultdict(list)
  for i, ex in enumerate(examples):
    by_reward[(ex.reward, tuple(sorted(dict(ex.reward_kwargs).items())))].append(i)
  scores = np.zeros(len(texts), np.float32)
  counts: dict[str, float] = defaultdict(float)
  for idx in by_reward.values():
    reward = examples[idx[0]].make_reward()
    items = [examples[i].reward_item(texts[i], int(lengths[i])) for i in idx]
    result = runner.score(reward, items)
    scores[idx] = result.filled(0.0)
    for k, v in result.counts().items():
      counts[f"reward/{k}"] += v
  return scores, dict(counts)
