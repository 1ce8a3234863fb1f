"""Multi-digit addition with a column-sum scratchpad (the cold-start pilot's task).

Prompt `567+847=`; rationale: each column's total including the carry in, least
significant column first, two digits each, comma-separated (`14,11,14`); then the
end-of-rationale marker; answer: the sum zero-padded to a fixed width (`1414`).
Warm-up teaches this format; the RL answer can be made cold (see ColdStart).
"""
from __future__ import annotations

import random
from typing import Any

from reasoning_jax.data.tasks.base import RATIONALE_READERS, ColdStart, Problem, Task


def column_scratchpad(operands: list[int], num_digits: int) -> tuple[list[int], int]:
  """Column totals (carry included), least significant first, and the sum."""
  totals, carry = [], 0
  for col in range(num_digits):
    t = sum((x // 10 ** col) % 10 for x in operands) + carry
    totals.append(t)
    carry = t // 10
  total = sum(operands)
  return totals, total


def implied_sum(rationale: str, width: int) -> str | None:
  """The sum a column-total rationale implies (`14,11,14` -> `1414` at width 4): each
  column's last digit, least significant first, under the last total whole; None
  when the rationale is not comma-separated two-digit totals."""
  totals = rationale.split(",")
  if not all(len(t) == 2 and t.isdigit() for t in totals):
    return None
  digits = totals[-1].lstrip("0") + "".join(t[1] for t in reversed(totals[:-1]))
  return digits.rjust(width, "0") if len(digits) <= width else digits


class ArithmeticTask(Task):
  """`a+b(+c...)=` with `num_digits`-digit operands (the difficulty knob)."""
  name = "arithmetic"

  def __init__(self, num_digits: int = 3, num_operands: int = 2, *,
               cold_start: ColdStart = ColdStart(), rationale_end: str = "|",
               heldout_fraction: float = 0.05):
    if not isinstance(num_digits, int) or not 1 <= num_digits <= 12:
      raise ValueError(f"num_digits must be an int in [1, 12], got {num_digits!r}.")
    if not isinstance(num_operands, int) or not 2 <= num_operands <= 9:
      raise ValueError(f"num_operands must be an int in [2, 9] (column totals stay two "
                       f"digits), got {num_operands!r}.")
    super().__init__(cold_start=cold_start, rationale_end=rationale_end,
                     heldout_fraction=heldout_fraction)
    if cold_start.kind in ("suffix", "prefix") and cold_start.marker in "0123456789+=,":
      raise ValueError(f"cold-start marker {cold_start.marker!r} collides with the task's "
                       "own symbols; pick another (e.g. '!').")
    self.num_digits, self.num_operands = num_digits, num_operands
    self.answer_width = len(str(num_operands * (10 ** num_digits - 1)))

  def _base_chars(self) -> str:
    """Digits and `+ = ,`."""
    return "0123456789+=,"

  def _problem(self, rng: random.Random) -> Problem:
    lo, hi = 10 ** (self.num_digits - 1), 10 ** self.num_digits - 1
    operands = [rng.randint(lo, hi) for _ in range(self.num_operands)]
    totals, total = column_scratchpad(operands, self.num_digits)
    prompt = "+".join(map(str, operands)) + "="
    rationale = ",".join(f"{t:02d}" for t in totals)
    answer = f"{total:0{self.answer_width}d}"
    return Problem(prompt, rationale, answer, {"operands": operands,
                                               "num_digits": self.num_digits})

  def _verifier(self, cold: bool, depth: int) -> tuple[str, dict[str, Any]]:
    # Exact match of the string after the marker: the paper's training reward, and the
    # only check that tells a cold-start answer from its warm-up spelling.
    return "exact", {"marker": self.rationale_end}


RATIONALE_READERS[ArithmeticTask.name] = implied_sum
