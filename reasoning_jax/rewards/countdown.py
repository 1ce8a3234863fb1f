"""Countdown verification: a safe arithmetic parser (no eval) and the rules check.

Grammar (integers, + - * /, parentheses, unary minus is rejected because Countdown only
combines the given numbers):
  expr := term (('+'|'-') term)* ;  term := atom (('*'|'/') atom)* ;
  atom := INT | '(' expr ')'
Values are exact `Fraction`s, so 7/2*2 is exactly 7 and no float rounding can forge a
hit. Length and nesting are bounded so adversarial strings cannot blow the stack.
"""
from __future__ import annotations

import collections
import re
from fractions import Fraction
from typing import Sequence

MAX_EXPR_CHARS = 200
MAX_DEPTH = 32
_TOKEN_RE = re.compile(r"\s*(\d+|[-+*/()])")


class ExpressionError(ValueError):
  """The string is not a valid Countdown expression."""


def _tokenize(expr: str) -> list[str]:
  tokens, pos = [], 0
  expr = expr.rstrip()
  while pos < len(expr):
    m = _TOKEN_RE.match(expr, pos)
    if not m:
      raise ExpressionError(f"unexpected character {expr[pos]!r} at {pos}")
    tokens.append(m.group(1))
    pos = m.end()
  return tokens


def evaluate_expression(expr: str) -> tuple[Fraction, list[int]]:
  """Evaluates `expr` exactly; returns (value, the integer literals used, in order).

  Raises:
    ExpressionError: on any syntax error, division by zero, or an over-long input.
  """
  if not isinstance(expr, str):
    raise TypeError(f"expr must be str, got {type(expr).__name__}.")
  if len(expr) > MAX_EXPR_CHARS:
    raise ExpressionError(f"expression longer than {MAX_EXPR_CHARS} characters")
  tokens = _tokenize(expr)
  if not tokens:
    raise ExpressionError("empty expression")
  pos = 0
  used: list[int] = []

  def peek():
    return tokens[pos] if pos < len(tokens) else None

  def take():
    nonlocal pos
    pos += 1
    return tokens[pos - 1]

  def atom(depth):
    if depth > MAX_DEPTH:
      raise ExpressionError("parentheses nested too deeply")
    tok = peek()
    if tok is None:
      raise ExpressionError("expression ends early")
    if tok == "(":
      take()
      value = expr_(depth + 1)
      if take_if(")") is None:
        raise ExpressionError("missing ')'")
      return value
    if tok.isdigit():
      take()
      if len(tok) > 1 and tok[0] == "0":
        raise ExpressionError(f"number with leading zero {tok!r}")
      used.append(int(tok))
      return Fraction(int(tok))
    raise ExpressionError(f"unexpected token {tok!r}")

  def take_if(t):
    return take() if peek() == t else None

  def term(depth):
    value = atom(depth)
    while peek() in ("*", "/"):
      op, rhs = take(), atom(depth)
      if op == "*":
        value *= rhs
      elif rhs == 0:
        raise ExpressionError("division by zero")
      else:
        value /= rhs
    return value

  def expr_(depth):
    value = term(depth)
    while peek() in ("+", "-"):
      op, rhs = take(), term(depth)
      value = value + rhs if op == "+" else value - rhs
    return value

  value = expr_(0)
  if pos != len(tokens):
    raise ExpressionError(f"unexpected token {tokens[pos]!r} after the expression")
  return value, used


def check_countdown(expr: str, numbers: Sequence[int], target: int,
                    use_all: bool = True) -> tuple[bool, str]:
  """Checks a Countdown answer: numbers from `numbers` (each at most once; all of
  them when `use_all`), evaluating exactly to `target`.

  Returns (ok, why) where `why` names the failed rule ("" when ok). Raises
  ExpressionError when `expr` does not parse.
  """
  value, used = evaluate_expression(expr)
  have = collections.Counter(int(n) for n in numbers)
  want = collections.Counter(used)
  extra = want - have
  if extra:
    return False, f"uses numbers not given (or reused): {sorted(extra.elements())}"
  if use_all and want != have:
    return False, f"does not use all numbers; unused {sorted((have - want).elements())}"
  if value != target:
    return False, f"evaluates to {value}, not {target}"
  return True, ""
