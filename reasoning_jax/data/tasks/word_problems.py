"""Templated GSM8K-like word problems with a worked rationale and a numeric answer.

All text is lower-case ASCII so a byte/char-level model handles it:
  prompt    "ann has 12 pens. she buys 3 boxes of 4 pens. she gives away 5 pens.
             how many pens does ann have now?"
  rationale "3*4=12. 12+12=24. 24-5=19."
  answer    "19"
`num_steps` (the difficulty knob) is the number of operations after the start amount.
"""
from __future__ import annotations

import random
import string
from typing import Any

from reasoning_jax.data.tasks.base import ColdStart, Problem, Task

_NAMES = [("ann", "she"), ("bob", "he"), ("cara", "she"), ("dan", "he"), ("eve", "she"),
          ("finn", "he"), ("gus", "he"), ("ivy", "she")]
_ITEMS = ["apples", "pens", "cards", "coins", "books", "shells", "stamps", "marbles"]


class WordProblemTask(Task):
  """GSM8K-like multi-step problems; `num_steps` in [1, 6], numbers up to `max_number`."""
  name = "word_problems"

  def __init__(self, num_steps: int = 2, max_number: int = 20, *,
               cold_start: ColdStart = ColdStart(), rationale_end: str = "|",
               heldout_fraction: float = 0.05):
    if not isinstance(num_steps, int) or not 1 <= num_steps <= 6:
      raise ValueError(f"num_steps must be an int in [1, 6], got {num_steps!r}.")
    if not isinstance(max_number, int) or max_number < 3:
      raise ValueError(f"max_number must be an int >= 3, got {max_number!r}.")
    super().__init__(cold_start=cold_start, rationale_end=rationale_end,
                     heldout_fraction=heldout_fraction)
    if cold_start.kind in ("suffix", "prefix") and cold_start.marker in self._base_chars():
      raise ValueError(f"cold-start marker {cold_start.marker!r} occurs in the problem "
                       "text; pick another (e.g. '!').")
    self.num_steps, self.max_number = num_steps, max_number

  def _base_chars(self) -> str:
    """Lower-case letters, digits and ` .?=+-*/`."""
    return string.ascii_lowercase + string.digits + " .?=+-*/"

  def _problem(self, rng: random.Random) -> Problem:
    name, pron = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    m = self.max_number
    value = rng.randint(2, m)
    sentences = [f"{name} has {value} {item}."]
    steps = []
    for _ in range(self.num_steps):
      kind = rng.choice(["buy", "give", "boxes", "double", "share"])
      if kind == "give" and value < 2:
        kind = "buy"
      if kind == "share" and not [k for k in range(2, 6) if value % k == 0]:
        kind = "boxes"
      if kind == "buy":
        k = rng.randint(1, m)
        sentences.append(f"{pron} buys {k} more {item}.")
        steps.append(f"{value}+{k}={value + k}.")
        value += k
      elif kind == "give":
        k = rng.randint(1, value - 1)
        sentences.append(f"{pron} gives away {k} {item}.")
        steps.append(f"{value}-{k}={value - k}.")
        value -= k
      elif kind == "boxes":
        b, per = rng.randint(2, 5), rng.randint(2, m)
        sentences.append(f"{pron} buys {b} boxes of {per} {item}.")
        steps.append(f"{b}*{per}={b * per}. {value}+{b * per}={value + b * per}.")
        value += b * per
      elif kind == "double":
        sentences.append(f"{pron} doubles the {item}.")
        steps.append(f"{value}*2={value * 2}.")
        value *= 2
      else:
        k = rng.choice([k for k in range(2, 6) if value % k == 0])
        friends = "1 friend" if k == 2 else f"{k - 1} friends"
        sentences.append(f"{pron} shares them equally with {friends} and keeps one "
                         "share.")
        steps.append(f"{value}/{k}={value // k}.")
        value //= k
    sentences.append(f"how many {item} does {name} have now?")
    return Problem(" ".join(sentences), " ".join(steps), str(value),
                   {"num_steps": self.num_steps})

  def _verifier(self, cold: bool, depth: int) -> tuple[str, dict[str, Any]]:
    # Exact match after the marker (the paper's training reward). For a lenient
    # numeric check use get_reward("math", answer_after=rationale_end).
    return "exact", {"marker": self.rationale_end}
