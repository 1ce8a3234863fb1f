"""QA answer matching for HotPotQA, MuSiQue and FinQA: SQuAD normalisation, EM, F1.

The normalisation is SQuAD's (lower-case, drop punctuation and the articles a/an/the,
collapse whitespace), which HotPotQA's and MuSiQue's official scripts share. One
addition: when both sides are plain numbers they are compared as numbers first, because
dropping punctuation turns "1.20" into "120" (FinQA's answers are mostly numbers).
`gold` may be one string or a list of aliases; the best alias counts.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Sequence

from reasoning_jax.rewards.math_equiv import numbers_match, parse_number

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def qa_normalize(s: str) -> str:
  """SQuAD normalisation: lower, remove punctuation, articles and extra whitespace."""
  s = s.lower()
  s = "".join(c for c in s if c not in _PUNCT)
  s = _ARTICLES.sub(" ", s)
  return " ".join(s.split())


def _aliases(gold: str | Sequence[str]) -> list[str]:
  if isinstance(gold, str):
    return [gold]
  if isinstance(gold, Sequence) and gold and all(isinstance(g, str) for g in gold):
    return list(gold)
  raise TypeError("gold must be a str or a non-empty sequence of str, got "
                  f"{gold!r:.80}.")


def _check_pred(predicted: str) -> None:
  if not isinstance(predicted, str):
    raise TypeError(f"predicted must be str, got {type(predicted).__name__}.")


def _as_number(s: str):
  return parse_number(s.strip().replace("$", "").rstrip("."))


def _em_one(pred: str, gold: str) -> bool:
  pn, gn = _as_number(pred), _as_number(gold)
  if pn is not None and gn is not None:
    return numbers_match(pn, gn, rel_tol=1e-4)
  return qa_normalize(pred) == qa_normalize(gold)


def qa_exact_match(predicted: str, gold: str | Sequence[str]) -> bool:
  """True iff the normalised prediction equals a normalised gold alias."""
  _check_pred(predicted)
  return any(_em_one(predicted, g) for g in _aliases(gold))


def qa_substring_match(predicted: str, gold: str | Sequence[str]) -> bool:
  """True iff a normalised gold alias occurs in the normalised prediction.

  This is the Tsallis paper's evaluation metric. Matching is on whole tokens, so
  gold "1" is not found inside "10".
  """
  _check_pred(predicted)
  p = f" {qa_normalize(predicted)} "
  for g in _aliases(gold):
    if _em_one(predicted, g):
      return True
    ng = qa_normalize(g)
    if ng and f" {ng} " in p:
      return True
  return False


def _f1_one(pred: str, gold: str) -> float:
  pn, gn = _as_number(pred), _as_number(gold)
  if pn is not None and gn is not None:
    return float(numbers_match(pn, gn, rel_tol=1e-4))
  p, g = qa_normalize(pred), qa_normalize(gold)
  # HotPotQA's official rule: yes/no/noanswer only score when exactly right.
  if (p in ("yes", "no", "noanswer") or g in ("yes", "no", "noanswer")) and p != g:
    return 0.0
  pt, gt = p.split(), g.split()
  if not pt or not gt:
    return float(pt == gt)
  common = collections.Counter(pt) & collections.Counter(gt)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pt), same / len(gt)
  return 2 * precision * recall / (precision + recall)


def qa_f1(predicted: str, gold: str | Sequence[str]) -> float:
  """Token-level F1 between normalised prediction and gold (max over aliases)."""
  _check_pred(predicted)
  return max(_f1_one(predicted, g) for g in _aliases(gold))
