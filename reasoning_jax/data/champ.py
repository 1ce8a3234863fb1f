"""CHAMP (Mao et al. 2024): 270 competition problems with final answers, as an eval set.

The problems ship inside the `champ-dataset` package (`champ_dataset/dataset_files/
v0.json`), so this works offline. CHAMP's answers are written for humans: numbers,
expressions in plain-text math notation marked `@@...@@`, "Yes"/"No", and free-form
sentences. `load_champ()` classifies each gold answer without running sympy (fast,
cannot hang); `check_champ_golds()` then confirms through a `RewardRunner` (with
timeouts) that every gold that claims to be verifiable really parses. Free-form answers
are kept, with `unparsable_reason` saying why no automatic verifier applies.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from reasoning_jax.rewards.base import RewardItem
from reasoning_jax.rewards.math_equiv import parse_number
from reasoning_jax.rewards.registry import get_reward

_SPAN = re.compile(r"@@(.+?)@@")
_ALIAS_GLUE = re.compile(
    r"^\s*(?:,?\s*or\s+(?:equivalently|an\s+equivalent\s+form\s+such\s+as)\s*)$")
# Plain-text function notation that LaTeX parsing would read as a product of symbols.
_TEXT_FUNCS = re.compile(r"\b(?:floor|ceil|sum_|prod_|C\(|max|min|lim|log_)|[≥≤±…]|\.\.\.")


@dataclasses.dataclass(frozen=True)
class ChampProblem:
  """One CHAMP problem.

  answer_kind: "number", "expression", "yes_no" or "free_text".
  golds: accepted answers (aliases) for the verifier `reward` (None for free_text).
  unparsable_reason: why no automatic verifier applies (None when one does).
  """
  identifier: str
  category: str
  problem: str
  answer_raw: str
  answer_text: str
  answer_kind: str
  golds: tuple[str, ...]
  reward: str | None
  unparsable_reason: str | None

  def reward_item(self, completion: str) -> RewardItem:
    """A RewardItem for scoring `completion` against this problem's golds."""
    if self.reward is None:
      raise ValueError(f"{self.identifier} has no automatic verifier: "
                       f"{self.unparsable_reason}")
    return RewardItem(completion, list(self.golds), None, {"id": self.identifier})


def _data_file() -> Any:
  try:
    import champ_dataset  # noqa: F401 - only to locate its files
  except ImportError:
    raise ImportError("CHAMP needs the champ-dataset package: pip install champ-dataset "
                      "(or reasoning_jax[reference]).") from None
  from importlib import resources
  return resources.files("champ_dataset").joinpath("dataset_files", "v0.json")


def classify_answer(raw: str) -> tuple[str, tuple[str, ...], str | None, str | None]:
  """(kind, golds, reward name, unparsable reason) for one CHAMP raw answer."""
  text = raw.replace("@@", "").strip()
  plain = text.rstrip(".").strip()
  if parse_number(plain) is not None:
    return "number", (plain,), "math", None
  m = re.fullmatch(r"(-?\d+)\s*\(i\.e\.,.*\)", plain)
  if m:  # "0 (i.e., no such values)": the number is the answer, the rest a gloss
    return "number", (m.group(1),), "math", None
  if plain.lower() in ("yes", "no"):
    return "yes_no", (plain.lower(),), "qa_exact_match", None
  spans = _SPAN.findall(raw)
  rest = _SPAN.sub("\x00", raw).split("\x00")
  # Whole answer is math spans (and numbers) joined only by "or equivalently" glue.
  glue_ok = spans and rest[0].strip() == "" and rest[-1].strip() == "" and all(
      _ALIAS_GLUE.match(r) for r in rest[1:-1])
  trailing = re.fullmatch(r",?\s*or\s+equivalently\s+(-?[\d.]+)\s*", rest[-1]) \
      if spans and len(spans) == 1 and rest[0].strip() == "" else None
  if glue_ok or trailing:
    golds = tuple(s.strip().replace("−", "-") for s in spans) + (
        (trailing.group(1),) if trailing else ())
    bad = [g for g in golds if _TEXT_FUNCS.search(g) or "=" in g]
    if bad and len(bad) == len(golds):
      return ("expression", golds, None,
              f"plain-text notation {bad[0]!r} (functions, ±, ellipses, relations or "
              "equations) that math-verify would misread")
    return "expression", tuple(g for g in golds if g not in bad), "math", None
  return ("free_text", (text,), None,
          "free-form answer (a sentence, a set of solutions or a condition): needs a "
          "judge or manual grading")


def load_champ() -> list[ChampProblem]:
  """All 270 CHAMP problems in file order, each with its classified gold answer."""
  data = json.loads(_data_file().read_text(encoding="utf-8"))
  out = []
  for pid, p in data["problems"].items():
    kind, golds, reward, reason = classify_answer(p["_raw_answer"])
    out.append(ChampProblem(pid, p["category"], p["_text"], p["_raw_answer"],
                            p["_answer"], kind, golds, reward, reason))
  return out


def check_champ_golds(problems: list[ChampProblem], runner) -> list[ChampProblem]:
  """Confirms each verifiable gold parses (each alias boxed and scored against itself)
  through `runner` (timeouts apply); a gold that fails gets `reward=None` and the
  verifier's reason. Returns the updated problems, same order."""
  checks = [(i, g) for i, p in enumerate(problems) if p.reward == "math" for g in p.golds]
  items = [RewardItem(f"\\boxed{{{g}}}", g) for _, g in checks]
  res = runner.score(get_reward("math", style="boxed"), items)
  failures: dict[int, str] = {}
  for (i, g), o in zip(checks, res.outcomes):
    if not (o.reason == "ok" and o.score == 1.0):
      failures.setdefault(i, f"gold {g!r} does not verify against itself: "
                             f"{o.reason} {o.detail}".strip())
  return [dataclasses.replace(p, reward=None, unparsable_reason=failures[i])
          if i in failures else p for i, p in enumerate(problems)]
