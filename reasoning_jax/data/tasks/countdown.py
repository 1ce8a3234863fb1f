"""Countdown: combine the given numbers with + - * / to reach the target.

Prompt `25,5,4:80=` (numbers, then the target); rationale: the steps of one solution
(`25-5=20,20*4=80`); answer: one expression (`(25-5)*4`). The verifier accepts any
expression that uses the numbers (each once; all of them by default) and evaluates
exactly to the target, parsed safely (no eval).
"""
from __future__ import annotations

import random
from typing import Any

from reasoning_jax.data.tasks.base import ColdStart, Problem, Task

_OPS = "+-*/"


class CountdownTask(Task):
  """`num_numbers` numbers in [1, max_number] (difficulty), target in [1, max_target]."""
  name = "countdown"

  def __init__(self, num_numbers: int = 3, max_number: int = 25, max_target: int = 200,
               *, cold_start: ColdStart = ColdStart(), rationale_end: str = "|",
               heldout_fraction: float = 0.05):
    if not isinstance(num_numbers, int) or not 2 <= num_numbers <= 6:
      raise ValueError(f"num_numbers must be an int in [2, 6], got {num_numbers!r}.")
    if max_number < 2 or max_target < 1:
      raise ValueError(f"need max_number >= 2 and max_target >= 1, got {max_number}, "
                       f"{max_target}.")
    if cold_start.kind == "reverse":
      raise ValueError("cold-start kind 'reverse' is for digit answers; a reversed "
                       "expression does not parse. Use 'suffix' or 'prefix'.")
    super().__init__(cold_start=cold_start, rationale_end=rationale_end,
                     heldout_fraction=heldout_fraction)
    if cold_start.kind != "none" and cold_start.marker in "0123456789+-*/(),:=":
      raise ValueError(f"cold-start marker {cold_start.marker!r} collides with the "
                       "task's own symbols; pick another (e.g. '!').")
    self.num_numbers, self.max_number, self.max_target = (num_numbers, max_number,
                                                          max_target)

  def _base_chars(self) -> str:
    """Digits, operators, parentheses and `, : =`."""
    return "0123456789+-*/(),:="

  def _problem(self, rng: random.Random) -> Problem:
    while True:
      numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
      # Pool of (value, expression, precedence); combine two at a time until one is
      # left, keeping every intermediate a positive integer (Countdown's rule).
      pool = [(n, str(n), 3) for n in numbers]
      steps, ok = [], True
      while len(pool) > 1 and ok:
        i, j = rng.sample(range(len(pool)), 2)
        (a, ea, pa), (b, eb, pb) = pool[i], pool[j]
        if a < b:
          (a, ea, pa), (b, eb, pb) = (b, eb, pb), (a, ea, pa)
        choices = ["+", "*"] + (["-"] if a > b else []) + (
            ["/"] if b > 1 and a % b == 0 else [])
        op = rng.choice(choices)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
        prec = 1 if op in "+-" else 2
        # Parenthesise only where precedence or non-associativity needs it.
        left = f"({ea})" if pa < prec else ea
        right = f"({eb})" if (pb < prec or (pb == prec and op in "-/")) else eb
        steps.append(f"{a}{op}{b}={value}")
        pool = [p for k, p in enumerate(pool) if k not in (i, j)]
        pool.append((value, f"{left}{op}{right}", prec))
        ok = value > 0
      target, expr = pool[0][0], pool[0][1]
      if ok and 1 <= target <= self.max_target:
        break
    prompt = ",".join(map(str, numbers)) + f":{target}="
    return Problem(prompt, ",".join(steps), expr,
                   {"numbers": numbers, "target": target})

  def _verifier(self, cold: bool, depth: int) -> tuple[str, dict[str, Any]]:
    kw: dict[str, Any] = {"marker": self.rationale_end, "use_all": True}
    if cold and self.cold_start.kind == "suffix":
      kw["suffix"] = self.cold_start.marker * depth
    elif cold and self.cold_start.kind == "prefix":
      kw["prefix"] = self.cold_start.marker * depth
    return "countdown", kw
