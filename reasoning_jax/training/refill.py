"""Dynamic sampling with refill (DAPO): over-sample prompts until the step's batch holds
groups with a learning signal.

A group whose rewards are all equal (every rollout right, or every one wrong) has zero
advantage under group normalisation: it costs compute and teaches nothing, and DAPO's
`filter_groups` removes it from the loss, so the effective batch shrinks as the policy
gets better (or stays cold). DAPO's remedy is to keep sampling new prompts and keep only
groups with mixed rewards until the batch is full. Here one round samples one batch of
`prompts_per_step` prompts with the same compiled sampler; after the first round, at
most `rounds` more are drawn (the stated over-sampling limit: at most
`(1 + rounds) x prompts_per_step` prompts per step). If the limit is reached first, the
batch is completed with the earliest zero-variance groups, which the objective then
masks out as before.

All functions here are host code on `training.rollout.Rollouts`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from reasoning_jax.training.rollout import Rollouts

# Over-sampling rounds when `RLConfig.refill_rounds = -1` and the objective filters
# zero-variance groups: four batches of prompts at most per step.
AUTO_ROUNDS = 3

_ROW_ARRAYS = ("tokens", "positions", "mask", "rationale_mask", "answer_mask",
               "sampler_logp")


def refill_rounds(setting: int, ocfg) -> int:
  """Extra sampling rounds per step: `setting` (>= 0), or for -1 `AUTO_ROUNDS` when the
  objective's config filters zero-variance groups (`filter_groups`, DAPO) and 0
  otherwise."""
  if setting < -1:
    raise ValueError(f"RLConfig.refill_rounds must be -1 (auto) or >= 0, got {setting}")
  if setting >= 0:
    return setting
  return AUTO_ROUNDS if getattr(ocfg, "filter_groups", False) else 0


def informative_groups(rewards: np.ndarray, group: int) -> np.ndarray:
  """[N] bool: groups whose `group` rewards are not all equal."""
  g = np.asarray(rewards, np.float64).reshape(-1, group)
  return g.max(axis=1) > g.min(axis=1)


def widen(roll: Rollouts, width: int, pad_id: int) -> Rollouts:
  """`roll` with its token columns left-padded to `width` (prompt columns are at the
  left: more left padding changes no token's position, mask or logprob)."""
  extra = width - roll.tokens.shape[1]
  if extra < 0:
    raise ValueError(f"cannot narrow rollouts of width {roll.tokens.shape[1]} to {width}")
  if extra == 0:
    return roll
  fill = {"tokens": pad_id, "positions": -1}
  return dataclasses.replace(roll, **{
      k: np.pad(getattr(roll, k), ((0, 0), (extra, 0)), constant_values=fill.get(k, 0))
      for k in _ROW_ARRAYS})


def pick_groups(keeps: list[np.ndarray], n: int) -> list[tuple[int, int]]:
  """(round, group) pairs of the step's `n` groups: informative groups in sampling
  order first, then the earliest zero-variance ones if fewer than `n` were found."""
  good = [(r, g) for r, k in enumerate(keeps) for g in np.flatnonzero(k)]
  rest = [(r, g) for r, k in enumerate(keeps) for g in np.flatnonzero(~k)]
  return (good + rest)[:n]


def merge(rolls: list[Rollouts], picks: list[tuple[int, int]], group: int,
          pad_id: int) -> Rollouts:
  """One batch of the picked groups' rows (all rounds widened to the widest), with the
  outcome counts of every sampled round (the verifier's work, failures included)."""
  width = max(r.tokens.shape[1] for r in rolls)
  rolls = [widen(r, width, pad_id) for r in rolls]
  rows = [(r, g * group + j) for r, g in picks for j in range(group)]

  def take(get):
    return np.stack([get(rolls[r])[i] for r, i in rows])

  arrays = {k: take(lambda x, k=k: getattr(x, k)) for k in _ROW_ARRAYS}
  stats = {k: take(lambda x, k=k: x.row_stats[k]) for k in rolls[0].row_stats}
  counts: dict[str, float] = {}
  for r in rolls:
    for k, v in r.counts.items():
      counts[k] = counts.get(k, 0.0) + v
  return Rollouts(**arrays, rewards=take(lambda x: x.rewards),
                  texts=[rolls[r].texts[i] for r, i in rows], metrics={},
                  row_stats=stats, counts=counts)
