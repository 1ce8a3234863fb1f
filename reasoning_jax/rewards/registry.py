"""Named, picklable rewards (frozen dataclasses) and `get_reward(name, **kwargs)`.

Each reward maps a `RewardItem` to a float, or raises a `RewardError` carrying the
reason (see base.py). They are plain picklable objects so the runner can ship them to
worker processes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from reasoning_jax.rewards import shaping
from reasoning_jax.rewards.base import (OK, UNPARSABLE_ANSWER, UNPARSABLE_GOLD,
                                        RewardError, RewardItem, UnparsableAnswer,
                                        UnparsableGold)
from reasoning_jax.rewards.countdown import ExpressionError, check_countdown
from reasoning_jax.rewards.extraction import STYLES, extract_answer
from reasoning_jax.rewards.math_equiv import check_equivalence
from reasoning_jax.rewards.qa import qa_exact_match, qa_f1, qa_substring_match


def _after(text: str, marker: str | None) -> str | None:
  """Text after the last `marker` (None if the marker is required and absent)."""
  if marker is None:
    return text
  i = text.rfind(marker)
  return None if i < 0 else text[i + len(marker):]


def _golds(item: RewardItem) -> list[str]:
  golds = [item.gold] if isinstance(item.gold, str) else list(item.gold or [])
  if not golds:
    raise UnparsableGold("no gold answer given")
  return golds


def _math_correct(pred: str, golds: list[str], incorrect: float = 0.0) -> bool:
  """Equivalence against any gold alias; raises when no verdict is possible."""
  verdicts = [check_equivalence(pred, g) for g in golds]
  if any(v.reason == OK and v.match for v in verdicts):
    return True
  if all(v.reason == UNPARSABLE_GOLD for v in verdicts):
    raise UnparsableGold(verdicts[0].detail)
  if any(v.reason == UNPARSABLE_ANSWER for v in verdicts):
    raise UnparsableAnswer(verdicts[0].detail, incorrect)
  return False


def _single_gold(item: RewardItem) -> str:
  gold = item.gold
  if isinstance(gold, str):
    return gold
  if gold is None or not gold:
    raise UnparsableGold("no gold answer given")
  return gold[0]


@dataclasses.dataclass(frozen=True)
class MathReward:
  """Math correctness: extract (`style`), then `check_equivalence` against the gold.

  `answer_after`: only look after this marker (e.g. "</think>"); a missing marker is an
  unparsable answer. Values: `correct` / `incorrect` (DAPO uses 1 / -1).
  """
  style: str = "auto"
  answer_after: str | None = None
  correct: float = 1.0
  incorrect: float = 0.0

  def __post_init__(self):
    if self.style not in STYLES:
      raise ValueError(f"Unknown extraction style {self.style!r}; choose one of {STYLES}.")

  def __call__(self, item: RewardItem) -> float:
    golds = _golds(item)
    text = _after(item.completion, self.answer_after)
    if text is None:
      raise UnparsableAnswer(f"no {self.answer_after!r} marker", self.incorrect)
    pred = extract_answer(text, self.style)
    if pred is None:
      raise UnparsableAnswer(f"no answer found (style={self.style})", self.incorrect)
    return self.correct if _math_correct(pred, golds, self.incorrect) else self.incorrect


@dataclasses.dataclass(frozen=True)
class ExactReward:
  """Exact string match of the text after the last `marker` with the gold (stripped).

  The synthetic tasks' verifier: exact match is the paper's training reward, and the
  cold-start formats differ from warm-up only in characters a looser check would forgive.
  """
  marker: str | None = None
  correct: float = 1.0
  incorrect: float = 0.0

  def __call__(self, item: RewardItem) -> float:
    gold = _single_gold(item)
    text = _after(item.completion, self.marker)
    if text is None:
      raise UnparsableAnswer(f"no {self.marker!r} marker", self.incorrect)
    return self.correct if text.strip() == gold.strip() else self.incorrect


@dataclasses.dataclass(frozen=True)
class QAReward:
  """QA scoring of the extracted answer: metric "exact_match", "substring" or "f1"."""
  metric: str = "exact_match"
  style: str = "auto_text"
  answer_after: str | None = None

  def __post_init__(self):
    if self.metric not in _QA_METRICS:
      raise ValueError(f"Unknown QA metric {self.metric!r}; choose one of "
                       f"{sorted(_QA_METRICS)}.")

  def __call__(self, item: RewardItem) -> float:
    if item.gold is None or (not isinstance(item.gold, str) and not item.gold):
      raise UnparsableGold("no gold answer given")
    text = _after(item.completion, self.answer_after)
    if text is None:
      raise UnparsableAnswer(f"no {self.answer_after!r} marker", 0.0)
    if self.style == "auto_text":
      # QA answers are text: take a tag / answer line if present, else the whole text
      # (a number fallback would cut "Paris, France" to nothing).
      pred = extract_answer(text, "tag") or extract_answer(text, "answer_line") or text
    else:
      pred = extract_answer(text, self.style)
    if pred is None or not pred.strip():
      raise UnparsableAnswer("empty answer", 0.0)
    return float(_QA_METRICS[self.metric](pred, item.gold))


_QA_METRICS: dict[str, Callable[..., Any]] = {
    "exact_match": qa_exact_match, "substring": qa_substring_match, "f1": qa_f1}


@dataclasses.dataclass(frozen=True)
class FormatReward:
  """1/0 format check: pattern "think" (TRL's regex) or "answer" (think + answer tags)."""
  pattern: str = "think"

  def __post_init__(self):
    if self.pattern not in ("think", "answer"):
      raise ValueError(f"Unknown format pattern {self.pattern!r}; use 'think' or "
                       "'answer'.")

  def __call__(self, item: RewardItem) -> float:
    fn = (shaping.think_format_reward if self.pattern == "think"
          else shaping.answer_format_reward)
    return fn(item.completion)


@dataclasses.dataclass(frozen=True)
class CountdownReward:
  """Countdown: the answer after `marker` must use `metadata["numbers"]` (all of them
  when `use_all`) and equal `metadata["target"]`; the gold field is unused.

  `prefix`/`suffix`: required exact wrappers (the cold-start formats); an answer without
  them is wrong (reason unparsable_answer), never silently accepted.
  """
  marker: str | None = None
  use_all: bool = True
  prefix: str = ""
  suffix: str = ""

  def __call__(self, item: RewardItem) -> float:
    try:
      numbers, target = item.metadata["numbers"], item.metadata["target"]
    except KeyError as e:
      raise UnparsableGold(f"countdown item metadata lacks {e}") from None
    text = _after(item.completion, self.marker)
    if text is None:
      raise UnparsableAnswer(f"no {self.marker!r} marker", 0.0)
    text = text.strip()
    if not (text.startswith(self.prefix) and text.endswith(self.suffix)
            and len(text) >= len(self.prefix) + len(self.suffix)):
      raise UnparsableAnswer(f"answer lacks the required {self.prefix!r}/"
                             f"{self.suffix!r} wrapper", 0.0)
    text = text[len(self.prefix):len(text) - len(self.suffix)]
    try:
      ok, _ = check_countdown(text, numbers, int(target), self.use_all)
    except ExpressionError as e:
      raise UnparsableAnswer(str(e), 0.0) from None
    return float(ok)


@dataclasses.dataclass(frozen=True)
class LaserReward:
  """LASER with a fixed target length: C(y) + alpha*1[correct]*1[num_tokens <= L_T].

  C(y) uses a boxed answer and `</think>`. LASER-D needs the group: score with
  `math` rewards, then call `shaping.laser_d_rewards` on the batch.
  """
  target_length: int = 4096
  alpha: float = 0.5

  def __call__(self, item: RewardItem) -> float:
    if item.num_tokens is None:
      raise ValueError("laser needs RewardItem.num_tokens (a token count).")
    golds = _golds(item)
    has_think = "</think>" in item.completion
    boxed = extract_answer(_after(item.completion, "</think>") or "", "boxed")
    try:
      correct = boxed is not None and _math_correct(boxed, golds)
    except UnparsableAnswer:
      correct = False  # a box we cannot parse is a wrong boxed answer (C = -0.5)
    base = shaping.laser_correctness_score(correct, boxed is not None, has_think)
    bonus = self.alpha * float(correct and item.num_tokens <= self.target_length)
    return base + bonus


@dataclasses.dataclass(frozen=True)
class DapoOverlongReward:
  """DAPO's overlong shaping alone (add it to a correctness reward with `weighted`)."""
  max_length: int = 20480
  cache_length: int = 4096

  def __call__(self, item: RewardItem) -> float:
    if item.num_tokens is None:
      raise ValueError("dapo_overlong needs RewardItem.num_tokens (a token count).")
    return float(shaping.dapo_overlong_penalty(
        [item.num_tokens], self.max_length, self.cache_length)[0])


@dataclasses.dataclass(frozen=True)
class RLCRReward:
  """RLCR calibration reward on the `<answer>` and `<confidence>` tags (see shaping).

  `answer_metric`: "math" (equivalence) or "qa_exact_match" (HotPotQA-style answers).
  """
  form: str = "paper"
  answer_metric: str = "math"

  def __post_init__(self):
    if self.form not in ("paper", "official"):
      raise ValueError(f"Unknown RLCR form {self.form!r}; use 'paper' or 'official'.")
    if self.answer_metric not in ("math", "qa_exact_match"):
      raise ValueError(f"Unknown RLCR answer_metric {self.answer_metric!r}; use 'math' "
                       "or 'qa_exact_match'.")

  def __call__(self, item: RewardItem) -> float:
    golds = _golds(item)
    format_ok = shaping.RLCR_FORMAT_RE.match(item.completion) is not None
    confidence = shaping.parse_confidence(item.completion)
    pred = extract_answer(item.completion, "tag")
    correct = False
    if pred:
      if self.answer_metric == "math":
        try:
          correct = _math_correct(pred, golds)
        except UnparsableAnswer:
          correct = False
      else:
        correct = qa_exact_match(pred, golds)
    return shaping.rlcr_reward(correct, confidence, self.form, format_ok)


@dataclasses.dataclass(frozen=True)
class WeightedReward:
  """Sum of `weight * reward(item)` over `components` (tuple of (weight, reward)).

  A component's unparsable-answer score is used as its value and the reason is kept;
  an unparsable gold or an error in any component leaves the item unscored.
  """
  components: tuple = ()

  def __post_init__(self):
    if not self.components:
      raise ValueError("weighted needs components=((weight, reward), ...).")
    for c in self.components:
      if not (isinstance(c, tuple) and len(c) == 2 and callable(c[1])):
        raise TypeError(f"each component must be (weight, reward), got {c!r:.80}.")

  def __call__(self, item: RewardItem) -> float:
    total, unparsable = 0.0, None
    for weight, reward in self.components:
      try:
        total += weight * float(reward(item))
      except UnparsableAnswer as e:
        total += weight * e.score
        unparsable = e
    if unparsable is not None:
      raise UnparsableAnswer(unparsable.detail, total)
    return total


@dataclasses.dataclass(frozen=True)
class RewardEntry:
  """A registry name: its reward class and what the name implies.

  Attributes:
    cls: the reward dataclass.
    fixed: fields the name sets (qa_f1's metric); they are not options of the name.
    defaults: the name's own defaults (dapo_math's +1 / -1); options may override them.
    text: markup the reward reads in the completion (a task that cannot write it
      refuses the reward rather than training on a constant score).
    metadata: `RewardItem.metadata` keys the reward reads.
    verifier: a correctness check (evaluation counts a score > 0.5 as correct).
  """
  cls: type
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  text: tuple[str, ...] = ()
  metadata: tuple[str, ...] = ()
  verifier: bool = False

  @property
  def options(self) -> tuple[str, ...]:
    """The keyword options the name takes (sorted)."""
    return tuple(sorted(f.name for f in dataclasses.fields(self.cls)
                        if f.name not in self.fixed))

  def __call__(self, **kwargs: Any):
    unknown = sorted(set(kwargs) - set(self.options))
    if unknown:
      raise TypeError(f"unknown option{'s' * (len(unknown) > 1)} {unknown}; its options "
                      f"are {list(self.options)}")
    return self.cls(**{**self.defaults, **kwargs, **self.fixed})


_THINK = ("<think>", "</think>")
_ANSWER = ("<answer>", "</answer>")
REWARDS: dict[str, RewardEntry] = {
    "math": RewardEntry(MathReward, verifier=True),
    "dapo_math": RewardEntry(MathReward, defaults={"correct": 1.0, "incorrect": -1.0},
                             verifier=True),
    "gsm8k": RewardEntry(MathReward, defaults={"style": "gsm8k"}, verifier=True),
    "exact": RewardEntry(ExactReward, verifier=True),
    "qa_exact_match": RewardEntry(QAReward, fixed={"metric": "exact_match"},
                                  verifier=True),
    "qa_substring": RewardEntry(QAReward, fixed={"metric": "substring"}, verifier=True),
    "qa_f1": RewardEntry(QAReward, fixed={"metric": "f1"}, verifier=True),
    "think_format": RewardEntry(FormatReward, fixed={"pattern": "think"}, text=_THINK),
    "answer_format": RewardEntry(FormatReward, fixed={"pattern": "answer"},
                                 text=_THINK + _ANSWER),
    "countdown": RewardEntry(CountdownReward, metadata=("numbers", "target"),
                             verifier=True),
    "laser": RewardEntry(LaserReward, text=("</think>", "\\boxed{}")),
    "dapo_overlong": RewardEntry(DapoOverlongReward),
    "rlcr": RewardEntry(RLCRReward, text=_THINK + _ANSWER + (
        "<analysis>", "</analysis>", "<confidence>", "</confidence>")),
    "weighted": RewardEntry(WeightedReward),
}
VERIFIERS = tuple(sorted(n for n, e in REWARDS.items() if e.verifier))


def _component(i: int, c: Any) -> tuple[float, Any]:
  """(weight, reward) from `(w, reward)`, `(w, name)` or `(w, name, options)`."""
  if not isinstance(c, (tuple, list)) or len(c) not in (2, 3):
    raise TypeError(f"components[{i}] must be (weight, name[, options]) or (weight, "
                    f"reward), got {c!r:.80}")
  w, r, opts = c[0], c[1], (dict(c[2]) if len(c) == 3 else {})
  if isinstance(r, str):
    try:
      r = get_reward(r, **opts)
    except (TypeError, ValueError) as e:
      raise type(e)(f"components[{i}]: {e}") from None
  elif opts:
    raise TypeError(f"components[{i}]: options go with a reward name, not an object")
  return float(w), r


def get_reward(name: str, **kwargs: Any):
  """Builds the named reward with `kwargs` (e.g. `get_reward("math", style="boxed")`).

  For "weighted", pass `components=((w, reward), ...)`; a component may also be
  `(w, name)` or `(w, name, options)` (options a dict or (key, value) pairs), resolved
  here.
  """
  if name not in REWARDS:
    raise ValueError(f"Unknown reward {name!r}; known rewards: {sorted(REWARDS)}.")
  if name == "weighted" and "components" in kwargs:
    kwargs["components"] = tuple(_component(i, c)
                                 for i, c in enumerate(kwargs["components"]))
  try:
    return REWARDS[name](**kwargs)
  except TypeError as e:
    raise TypeError(f"Bad arguments for reward {name!r}: {e}") from None


__all__ = ["get_reward", "REWARDS", "RewardEntry", "RewardError", "UNPARSABLE_ANSWER",
           "VERIFIERS"]
