"""The rule vocabulary of `training.validate`: a `Rule` per config field, the common
range / choice rules, the annotation-driven type check and `(name, value)` pairs.

A rule returns the problem with a field's value (the text after "Section.field =
value: "), or None when the value is fine. It sees the whole experiment, for rules
that tie fields together.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable

from reasoning_jax.training.config import Experiment


# A rule returns the problem with a field's value (the text after "Section.field =
# value: "), or None when the value is fine. It sees the whole experiment, for rules
# that tie fields together. Rules run only on values of the annotated type unless
# `typed` is False (the rule then checks the type itself).
@dataclasses.dataclass(frozen=True)
class Rule:
  check: Callable[[Any, Experiment], str | None]
  typed: bool = True


def _rule(fn: Callable[[Any, Experiment], str | None], typed: bool = True) -> Rule:
  return Rule(fn, typed)


ANY = _rule(lambda v, exp: None)  # every value of the annotated type is meaningful


def at_least(lo: float, why: str = "") -> Rule:
  """value >= lo."""
  return _rule(lambda v, exp: None if v >= lo else f"must be >= {lo}{why}")


def above(lo: float, why: str = "") -> Rule:
  """value > lo."""
  return _rule(lambda v, exp: None if v > lo else f"must be > {lo}{why}")


def interval(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
             why: str = "") -> Rule:
  """lo <= value <= hi, either end open."""
  def check(v, exp):
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return None if ok else (f"must lie in {'(' if lo_open else '['}{lo}, {hi}"
                            f"{')' if hi_open else ']'}{why}")
  return _rule(check)


def one_of(values, why: str = "") -> Rule:
  """value in values (listed in the message)."""
  allowed = tuple(values)
  return _rule(lambda v, exp: None if v in allowed else f"must be one of {list(allowed)}"
               f"{why}")


# ------------------------------------------------------------------------------ types

def type_problem(value: Any, hint: Any) -> str | None:
  """Why `value` is not of the annotated type `hint` (None if it is, or if the hint
  is one this check does not know). Tuples accept lists: gin writes both."""
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(hint)
    if any(type_problem(value, a) is None for a in args):
      return None
    return " or ".join(type_problem(value, a) or "" for a in args).replace(
        " or expected", " or")
  if hint is type(None):
    return None if value is None else "expected None"
  if origin is typing.Literal:
    args = typing.get_args(hint)
    return None if value in args else f"expected one of {list(args)}"
  if hint is bool:
    return None if isinstance(value, bool) else "expected True or False"
  if hint is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return None if ok else "expected an integer"
  if hint is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and not math.isfinite(value):
      return "expected a finite number"
    return None if ok else "expected a number"
  if hint is str:
    return None if isinstance(value, str) else "expected a string"
  if hint is tuple or origin is tuple:
    return None if isinstance(value, (tuple, list)) else "expected a tuple"
  if isinstance(hint, type) and dataclasses.is_dataclass(hint):
    return None if isinstance(value, hint) else f"expected a {hint.__name__}"
  return None


def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _show(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


# -------------------------------------------------------------------------- pairs

def _pairs_problem(value, names=None, where: str = "") -> str | None:
  """Problems with a `((name, value), ...)` setting; `names` the allowed names."""
  for item in value:
    if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(
        item[0], str):
      return (f"expected (name, value) pairs, e.g. (('{where or 'name'}', 1),); got "
              f"the item {_show(item)}")
  keys = [k for k, _ in value]
  dup = sorted({k for k in keys if keys.count(k) > 1})
  if dup:
    return f"names {dup} appear more than once; give each once"
  if names is not None:
    unknown = [k for k in keys if k not in names]
    if unknown:
      return f"unknown names {unknown}; allowed: {sorted(names)}"
  return None


def pairs(names: Callable[[Experiment], Any] | None = None) -> Rule:
  """A `((name, value), ...)` setting, names checked against `names(exp)`."""
  return _rule(lambda v, exp: _pairs_problem(v, names(exp) if names else None))
