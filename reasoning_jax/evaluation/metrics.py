"""Evaluation metrics on the host (numpy only): pass@k, maj@k, length summaries.

Shape key: P prompts, N samples per prompt.

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c are
correct, the probability that a random k-subset holds at least one correct sample,
  1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i),
computed in the product form, which never forms the huge binomials.

maj@k is the accuracy of the majority answer among k samples. Answers are compared as
given (normalise them first, e.g. with the reward layer's extraction); None is an
abstention (no vote); a subset with no votes scores 0. Ties go to the answer seen first
in sample order. With n == k the one subset is scored exactly; with n > k the score is
the mean over k-subsets: all of them when there are at most `max_subsets`, otherwise
`max_subsets` random ones (seeded), so results are reproducible.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _check_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
  return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k for one prompt with `n` samples, `c` of them correct.

  Raises:
    ValueError: unless 0 <= c <= n and 1 <= k <= n.
  """
  n, c, k = _check_int("n", n), _check_int("c", c), _check_int("k", k)
  if not 0 <= c <= n:
    raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
  if not 1 <= k <= n:
    raise ValueError(f"need 1 <= k <= n (draw more samples or lower k), got n={n}, k={k}")
  if n - c < k:
    return 1.0  # every k-subset contains a correct sample
  i = np.arange(n - c + 1, n + 1, dtype=np.float64)
  return float(1.0 - np.prod(1.0 - k / i))


def _correct_matrix(correct_PN: Any) -> np.ndarray:
  arr = np.asarray(correct_PN)
  if arr.ndim != 2:
    raise ValueError(f"correctness must be a [P, N] matrix, got shape {arr.shape}")
  if arr.dtype != bool and not np.all((arr == 0) | (arr == 1)):
    raise ValueError("correctness entries must be booleans or 0/1")
  return arr.astype(bool)


def mean_pass_at_k(correct_PN: Any, k: int) -> float:
  """Mean over prompts of `pass_at_k(N, c_p, k)` for a boolean `[P, N]` matrix."""
  correct_PN = _correct_matrix(correct_PN)
  p, n = correct_PN.shape
  if p == 0:
    raise ValueError("mean_pass_at_k needs at least one prompt")
  return float(np.mean([pass_at_k(n, int(c), k) for c in correct_PN.sum(axis=1)]))


def majority_answer(answers: Sequence[str | None]) -> int | None:
  """Index of the majority answer's first occurrence (ties: first seen), or None."""
  counts: dict[str, int] = {}
  first: dict[str, int] = {}
  for i, a in enumerate(answers):
    if a is None:
      continue
    counts[a] = counts.get(a, 0) + 1
    first.setdefault(a, i)
  if not counts:
    return None
  # max over answers in first-seen order keeps the earliest among equal counts.
  best = max(first, key=lambda a: (counts[a], -first[a]))
  return first[best]


def _subsets(n: int, k: int, max_subsets: int, rng: np.random.Generator):
  if math.comb(n, k) <= max_subsets:
    return list(itertools.combinations(range(n), k))
  # Sorted indices keep sample order inside a subset, so "first seen" is well defined.
  return [tuple(np.sort(rng.choice(n, size=k, replace=False))) for _ in range(max_subsets)]


def maj_at_k(answers: Sequence[Sequence[str | None]],
             correct: Sequence[Sequence[Any]] | np.ndarray | Callable[[int, str], bool],
             k: int, *, seed: int | np.random.Generator = 0,
             max_subsets: int = 200) -> float:
  """Majority-vote accuracy over k samples, averaged over prompts.

  Args:
    answers: `[P][N]` normalised answer strings, None where no answer was extracted.
    correct: either a `[P, N]` table (bool or 0/1) saying whether each sample's answer
      is correct, the voted answer taking the correctness of its first occurrence in
      the subset, or a function `correct(prompt_index, answer) -> bool`.
    k: votes per subset, 1 <= k <= N for every prompt.
    seed: seed or numpy Generator for the random subsets (used only when the number of
      k-subsets exceeds `max_subsets`).
    max_subsets: subsets per prompt when sampling; below it every subset is used.
  """
  k = _check_int("k", k)
  if len(answers) == 0:
    raise ValueError("maj_at_k needs at least one prompt")
  if callable(correct):
    fn = correct
  else:
    table = correct if isinstance(correct, np.ndarray) else [list(r) for r in correct]
    if len(table) != len(answers) or any(
        len(table[p]) != len(answers[p]) for p in range(len(answers))):
      raise ValueError("the correctness table must have the same [P][N] shape as "
                       "answers")
    fn = None
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  scores = []
  for p, row in enumerate(answers):
    n = len(row)
    if not 1 <= k <= n:
      raise ValueError(f"need 1 <= k <= N, got k={k} and N={n} samples for prompt {p}")
    total = 0.0
    subsets = _subsets(n, k, max_subsets, rng)
    for sub in subsets:
      pick = majority_answer([row[i] for i in sub])
      if pick is None:
        continue
      i = sub[pick]
      total += float(bool(fn(p, row[i]))) if fn is not None else float(bool(table[p][i]))
    scores.append(total / len(subsets))
  return float(np.mean(scores))


def length_summary(lengths: Any, truncated: Any = None) -> dict[str, float]:
  """Mean/median/p90/max of completion lengths, and the truncated fraction if given.

  `truncated` is a boolean array like `lengths` (e.g. `finish_reason != STOP`).
  """
  lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
  if lengths.size == 0:
    raise ValueError("length_summary needs at least one length")
  out = {"length_mean": float(lengths.mean()), "length_median": float(np.median(lengths)),
         "length_p90": float(np.percentile(lengths, 90)), "length_max": float(lengths.max())}
  if truncated is not None:
    out["truncated_frac"] = truncation_rate(truncated)
  return out


def truncation_rate(truncated: Any) -> float:
  """Fraction of completions flagged as truncated (a boolean or 0/1 array)."""
  t = np.asarray(truncated).reshape(-1)
  if t.size == 0:
    raise ValueError("truncation_rate needs at least one completion")
  if t.dtype != bool and not np.all((t == 0) | (t == 1)):
    raise ValueError("truncated flags must be booleans or 0/1 (e.g. finish_reason != STOP)")
  return float(t.astype(bool).mean())
