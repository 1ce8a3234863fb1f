"""Shared types of the reward side: items, outcomes, and the errors that carry a reason.

A reward is a callable `reward(item) -> float`. When it cannot score an item honestly it
raises one of the `RewardError` subclasses below instead of returning a made-up number;
the runner turns that into an `Outcome` whose `reason` is counted in the metrics. This is
how "nothing becomes a silent 0" is kept: a 0 only ever means "scored, and wrong".
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Protocol, Sequence

# Every reason an outcome can carry. "ok" is the only one that is a real score.
OK = "ok"
TIMEOUT = "timeout"
EXCEPTION = "exception"
UNPARSABLE_GOLD = "unparsable_gold"
UNPARSABLE_ANSWER = "unparsable_answer"
REASONS = (OK, TIMEOUT, EXCEPTION, UNPARSABLE_GOLD, UNPARSABLE_ANSWER)

Gold = str | Sequence[str] | None


@dataclasses.dataclass(frozen=True)
class RewardItem:
  """One completion to score.

  Attributes:
    completion: the model's decoded text (prompt excluded).
    gold: the reference answer, a list of aliases, or None (format-only rewards).
    num_tokens: completion length in tokens; length rewards need it (text length in
      characters is not a token count, which is a bug tunix has for DAPO).
    metadata: task-specific fields a verifier needs (e.g. Countdown's numbers).
  """
  completion: str
  gold: Gold = None
  num_tokens: int | None = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.completion, str):
      raise TypeError(
          f"RewardItem.completion must be str, got {type(self.completion).__name__}; "
          "decode the tokens to text before scoring.")
    if self.num_tokens is not None and (not isinstance(self.num_tokens, int)
                                        or self.num_tokens < 0):
      raise ValueError(f"RewardItem.num_tokens must be a non-negative int, got "
                       f"{self.num_tokens!r}.")


@dataclasses.dataclass(frozen=True)
class Outcome:
  """The result for one item: a score, or NaN with the reason why there is none.

  `unparsable_answer` outcomes do carry a score (the reward's value for "no usable
  answer", e.g. 0 or -1), because a model that emits no answer is wrong, not unknown;
  the reason still marks it so it is counted. `timeout`, `exception` and
  `unparsable_gold` carry NaN: the caller must decide (mask the group, or fill).
  """
  score: float
  reason: str = OK
  detail: str = ""

  @property
  def ok(self) -> bool:
    """True when the score is a real verdict."""
    return self.reason == OK


class RewardError(Exception):
  """Base of the errors a reward raises to report a reason instead of a score."""
  reason = EXCEPTION

  def __init__(self, detail: str = "", score: float = math.nan):
    super().__init__(detail)
    self.detail = detail
    self.score = score


class UnparsableGold(RewardError):
  """The reference answer cannot be parsed; the item cannot be scored (score NaN)."""
  reason = UNPARSABLE_GOLD


class UnparsableAnswer(RewardError):
  """The completion has no usable answer. `score` is the reward's value for that case."""
  reason = UNPARSABLE_ANSWER


class Reward(Protocol):
  """A picklable callable scoring one item (raise a RewardError to report a reason)."""

  def __call__(self, item: RewardItem) -> float:
    ...


def score_item(reward: Reward, item: RewardItem) -> Outcome:
  """Scores one item in-process, turning errors into reasons (no timeout here)."""
  try:
    value = reward(item)
  except RewardError as e:
    return Outcome(float(e.score), e.reason, e.detail)
  except Exception as e:  # noqa: BLE001 - any failure must become a counted reason
    return Outcome(math.nan, EXCEPTION, f"{type(e).__name__}: {e}"[:500])
  try:
    value = float(value)
  except (TypeError, ValueError):
    return Outcome(math.nan, EXCEPTION,
                   f"reward returned {type(value).__name__}, expected a float")
  if math.isnan(value):
    return Outcome(math.nan, EXCEPTION, "reward returned NaN")
  return Outcome(value)
