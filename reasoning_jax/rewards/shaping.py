"""Format, length and calibration rewards, and weighted combination.

Per-item functions take text and numbers; the batch functions take numpy arrays so the
trainer can shape a whole batch after the worker pool has judged correctness. Lengths
are always in tokens (tunix's DAPO uses characters, which is a different reward).
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

# TRL's `think_format_reward` (trl/rewards/format_rewards.py): one leading <think> block.
THINK_FORMAT_RE = re.compile(r"^<think>(?!.*<think>)(.*?)</think>.*$", re.DOTALL)
ANSWER_FORMAT_RE = re.compile(
    r"^<think>(?!.*<think>).*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
# RLCR (arXiv 2507.16806) output: think, answer, analysis, confidence, in that order.
RLCR_FORMAT_RE = re.compile(
    r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*<analysis>.*?</analysis>\s*"
    r"<confidence>(.*?)</confidence>\s*$", re.DOTALL)


def think_format_reward(text: str) -> float:
  """1.0 if `text` matches TRL's think regex `^<think>(?!.*<think>)(.*?)</think>.*$`."""
  return 1.0 if THINK_FORMAT_RE.match(text) else 0.0


def answer_format_reward(text: str) -> float:
  """1.0 for `<think>...</think><answer>...</answer>` and nothing after it, else 0."""
  return 1.0 if ANSWER_FORMAT_RE.match(text) else 0.0


def _check_lengths(lengths, name="lengths") -> np.ndarray:
  arr = np.asarray(lengths)
  if arr.dtype.kind not in "iu" or (arr < 0).any():
    raise ValueError(f"{name} must be non-negative integer token counts, got "
                     f"dtype {arr.dtype}.")
  return arr


def dapo_overlong_penalty(lengths_B, max_length: int = 20480,
                          cache_length: int = 4096) -> np.ndarray:
  """DAPO's soft overlong punishment, added to the reward (lengths in tokens).

  0 if L <= max - cache; (max - cache - L) / cache if L <= max; -1 beyond max.
  """
  if not 0 < cache_length <= max_length:
    raise ValueError(f"need 0 < cache_length <= max_length, got {cache_length}, "
                     f"{max_length}.")
  lengths = _check_lengths(lengths_B).astype(np.float64)
  soft = max_length - cache_length
  out = np.where(lengths <= soft, 0.0, (soft - lengths) / cache_length)
  return np.where(lengths > max_length, -1.0, out)


def laser_correctness_score(correct: bool, has_answer: bool, has_think: bool) -> float:
  """LASER's C(y): +1 correct, -0.5 a wrong boxed answer, -1 no box or no think."""
  if correct:
    return 1.0
  return -0.5 if (has_answer and has_think) else -1.0


def laser_rewards(base_B, correct_B, lengths_B, target_length, alpha: float = 0.5
                  ) -> np.ndarray:
  """LASER step reward: `C(y) + alpha * 1[correct] * 1[L <= L_T]` (arXiv 2505.15612).

  `target_length` is a scalar or a per-item array (LASER-D passes per-group targets).
  """
  base = np.asarray(base_B, dtype=np.float64)
  correct = np.asarray(correct_B, dtype=bool)
  lengths = _check_lengths(lengths_B)
  if not (base.shape == correct.shape == lengths.shape):
    raise ValueError(f"shapes differ: base {base.shape}, correct {correct.shape}, "
                     f"lengths {lengths.shape}.")
  return base + alpha * (correct & (lengths <= np.asarray(target_length)))


LASER_D_BUCKETS = ("easy", "medium", "hard")


def laser_d_targets(correct_BG, targets: Mapping[str, int]) -> np.ndarray:
  """Per-group target lengths for LASER-D from each group's accuracy.

  A group (one prompt's G rollouts) with accuracy >= 2/3 is easy, in [1/3, 2/3)
  medium, below 1/3 hard; each bucket has its own L_T (re-chosen during training from
  monitored accuracy by the caller). Returns int array [B] (one target per group).
  """
  missing = set(LASER_D_BUCKETS) - set(targets)
  if missing:
    raise ValueError(f"targets needs keys {LASER_D_BUCKETS}; missing {sorted(missing)}.")
  correct = np.asarray(correct_BG, dtype=bool)
  if correct.ndim != 2:
    raise ValueError(f"correct_BG must be [groups, G], got shape {correct.shape}.")
  acc_B = correct.mean(axis=1)
  return np.where(acc_B >= 2 / 3, targets["easy"],
                  np.where(acc_B >= 1 / 3, targets["medium"], targets["hard"]))


def laser_d_rewards(base_BG, correct_BG, lengths_BG, targets: Mapping[str, int],
                    alpha: float = 0.5) -> np.ndarray:
  """LASER-D: the LASER reward with each group's target chosen by its difficulty."""
  tgt_B = laser_d_targets(correct_BG, targets)
  return laser_rewards(base_BG, correct_BG, lengths_BG, tgt_B[:, None], alpha)


def parse_confidence(text: str) -> float | None:
  """The number in the last `<confidence>...</confidence>`; None if absent/outside [0,1].

  A trailing % divides by 100 (models write "80%").
  """
  found = re.findall(r"<confidence>(.*?)</confidence>", text, flags=re.DOTALL)
  if not found:
    return None
  s = found[-1].strip()
  scale = 1.0
  if s.endswith("%"):
    s, scale = s[:-1].strip(), 0.01
  try:
    q = float(s) * scale
  except ValueError:
    return None
  return q if (math.isfinite(q) and 0.0 <= q <= 1.0) else None


def rlcr_reward(correct: bool, confidence: float | None, form: str = "paper",
                format_ok: bool = True) -> float:
  """RLCR's calibration reward (arXiv 2507.16806).

  form="paper": `1[correct] - (q - 1[correct])**2` (Brier). An unparsable confidence is
    scored as the worst Brier term, 1 (our choice; the paper does not say).
  form="official": the released code (`reward_fns.py`): `0.5*format + 0.5*acc +
    0.5*(1 - (acc - q)**2)`, with acc and the Brier term 0 when the format fails or q
    is unparsable.
  """
  acc = 1.0 if correct else 0.0
  if form == "paper":
    if confidence is None:
      return acc - 1.0
    return acc - (confidence - acc) ** 2
  if form == "official":
    if not format_ok or confidence is None:
      return 0.5 * float(format_ok)
    return 0.5 + 0.5 * acc + 0.5 * (1.0 - (acc - confidence) ** 2)
  raise ValueError(f"Unknown RLCR form {form!r}; choose 'paper' or 'official'.")


def combine_rewards(components: Mapping[str, np.ndarray],
                    weights: Mapping[str, float]) -> np.ndarray:
  """Weighted sum of reward arrays; every weight must name a component and vice versa.

  NaN (an unscored item) propagates: a combined reward is only as known as its parts.
  """
  if set(components) != set(weights):
    raise ValueError(f"components {sorted(components)} and weights {sorted(weights)} "
                     "must name the same rewards.")
  if not components:
    raise ValueError("combine_rewards needs at least one component.")
  arrays = {k: np.asarray(v, dtype=np.float64) for k, v in components.items()}
  shapes = {v.shape for v in arrays.values()}
  if len(shapes) != 1:
    raise ValueError(f"component shapes differ: { {k: v.shape for k, v in arrays.items()} }.")
  return sum(weights[k] * arrays[k] for k in sorted(arrays))
