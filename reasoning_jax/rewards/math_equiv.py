"""Math answer equivalence: a cheap exact/number fast path, then sympy via math-verify.

math-verify (HuggingFace) does the LaTeX parsing and sympy comparison; we do not re-write
it. Its default timeouts use `signal.alarm`, which only works on the main thread of the
main interpreter (elsewhere it raises). We therefore pass `parsing_timeout=None` and
`timeout_seconds=None` whenever we are off the main thread or inside a runner worker,
where the pool enforces its own per-item deadline by killing the process (a thread
running sympy cannot be interrupted, a process can).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
from fractions import Fraction

from reasoning_jax.rewards.base import OK, UNPARSABLE_ANSWER, UNPARSABLE_GOLD

# math-verify warns once when its timeout is disabled; we disable it on purpose.
logging.getLogger("math_verify").setLevel(logging.ERROR)

REL_TOL = 1e-6  # matches math-verify's default float_rounding=6
_signal_timeouts_allowed = True  # runner workers switch this off (pool owns timeouts)
_MV_TIMEOUT_S = 5

_NUM_RE = re.compile(
    r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][+-]?\d+)?$")
_FRAC_RE = re.compile(r"^([+-]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_STRIP_RE = re.compile(r"\\[!,;: ]|\\left|\\right|\\displaystyle|\\text\{\s*\}")


def disable_signal_timeouts() -> None:
  """Never use math-verify's SIGALRM timeouts in this process (the caller enforces one)."""
  global _signal_timeouts_allowed
  _signal_timeouts_allowed = False


def _mv_timeout() -> int | None:
  on_main = threading.current_thread() is threading.main_thread()
  return _MV_TIMEOUT_S if (_signal_timeouts_allowed and on_main) else None


def normalize_answer(s: str) -> str:
  """Light normalisation before any comparison: `$`, spacing macros, a wrapping box."""
  s = s.strip()
  boxed = re.fullmatch(r"\\(?:boxed|fbox)\{(.*)\}", s, flags=re.DOTALL)
  if boxed:
    s = boxed.group(1)
  s = s.strip().strip("$").strip()
  s = _STRIP_RE.sub("", s)
  s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "%")
  s = re.sub(r"\s+", " ", s).strip()
  return s.rstrip(".").strip()


def parse_number(s: str) -> tuple[Fraction, bool] | None:
  """Parses a plain number: `1,234.5`, `-3`, `1e3`, `3/4`, `\\frac{3}{4}`, `50%`.

  Returns (value, is_percent) with value exact, or None if `s` is not a plain number.
  """
  s = s.strip().replace(" ", "")
  if not s or len(s) > 100:
    return None
  percent = s.endswith("%")
  if percent:
    s = s[:-1]
  m = _FRAC_RE.match(s)
  if m:
    num, den = parse_number(m.group(2)), parse_number(m.group(3))
    if num is None or den is None or den[0] == 0 or num[1] or den[1]:
      return None
    value = num[0] / den[0]
    return (-value if m.group(1) == "-" else value), percent
  if s.count("/") == 1:
    a, b = s.split("/")
    num, den = parse_number(a), parse_number(b)
    if num is None or den is None or den[0] == 0 or num[1] or den[1]:
      return None
    return num[0] / den[0], percent
  if not _NUM_RE.match(s) or not re.search(r"\d", s):
    return None
  exp = re.search(r"[eE]([+-]?\d+)$", s)
  if exp and abs(int(exp.group(1))) > 1000:
    return None  # 1e99999999 would build a gigantic exact integer; leave it to sympy
  try:
    return Fraction(s.replace(",", "")), percent
  except (ValueError, ZeroDivisionError):
    return None


def _close(a: Fraction, b: Fraction, rel_tol: float) -> bool:
  if a == b:
    return True
  if a.denominator == 1 and b.denominator == 1:
    return False  # two integers are compared exactly: 123456789 is not 123456788
  # Exact rational arithmetic: floats overflow on 1e400 and lose digits on big values.
  tol = Fraction(rel_tol)
  return abs(a - b) <= tol * max(abs(a), abs(b)) + tol * Fraction(1, 1000)


def numbers_match(pred: tuple[Fraction, bool], gold: tuple[Fraction, bool],
                  rel_tol: float = REL_TOL) -> bool:
  """Compares parsed numbers; a percent matches either its value or its value / 100."""
  (p, p_pct), (g, g_pct) = pred, gold
  cands_p = [p, p / 100] if p_pct else [p]
  cands_g = [g, g / 100] if g_pct else [g]
  return any(_close(a, b, rel_tol) for a in cands_p for b in cands_g)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Result of an equivalence check: `match` is only meaningful when reason == "ok"."""
  match: bool
  reason: str = OK
  detail: str = ""


def _mv_parse(s: str):
  import math_verify  # deferred: a slow sympy import the fast path does not need
  timeout = _mv_timeout()
  # no_fallback: a failed LaTeX parse must read as "unparsable", not as a raw string.
  parsed = math_verify.parse(f"${s}$", fallback_mode="no_fallback",
                             parsing_timeout=timeout)
  if not parsed:
    parsed = math_verify.parse(
        s, extraction_config=[math_verify.ExprExtractionConfig()],
        fallback_mode="no_fallback", parsing_timeout=timeout)
  return parsed


def check_equivalence(predicted: str | None, gold: str, rel_tol: float = REL_TOL
                      ) -> Verdict:
  """Decides whether `predicted` equals `gold` as math, reporting why when it cannot.

  Order: normalised string equality; both plain numbers (exact fractions, percent
  either way, relative tolerance `rel_tol`); otherwise math-verify (sympy).
  """
  if not isinstance(gold, str):
    raise TypeError(f"gold must be str, got {type(gold).__name__}.")
  if predicted is None:
    return Verdict(False, UNPARSABLE_ANSWER, "no answer extracted")
  if not isinstance(predicted, str):
    raise TypeError(f"predicted must be str or None, got {type(predicted).__name__}.")
  p, g = normalize_answer(predicted), normalize_answer(gold)
  if not g:
    return Verdict(False, UNPARSABLE_GOLD, "empty gold answer")
  if not p:
    return Verdict(False, UNPARSABLE_ANSWER, "empty answer")
  if p == g:
    return Verdict(True)
  pn, gn = parse_number(p), parse_number(g)
  if pn is not None and gn is not None:
    return Verdict(numbers_match(pn, gn, rel_tol))
  gold_parsed = _mv_parse(g)
  if not gold_parsed:
    return Verdict(False, UNPARSABLE_GOLD, f"math-verify cannot parse gold {g[:80]!r}")
  pred_parsed = _mv_parse(p)
  if not pred_parsed:
    return Verdict(False, UNPARSABLE_ANSWER, f"math-verify cannot parse {p[:80]!r}")
  import math_verify
  digits = max(1, round(-math.log10(rel_tol)))
  ok = math_verify.verify(gold_parsed, pred_parsed, float_rounding=digits,
                          timeout_seconds=_mv_timeout())
  return Verdict(bool(ok))


def answers_match(predicted: str | None, gold: str) -> bool:
  """True iff `predicted` is mathematically equivalent to `gold`.

  Handles numbers with commas, fractions, decimals, percentages, LaTeX fractions and
  roots, simple expressions, intervals and tuples (via math-verify), with a relative
  numeric tolerance of 1e-6. An unparsable side is "not a match"; use
  `check_equivalence` to learn why. Has no timeout off the main thread: score batches
  with `RewardRunner`, which enforces one per item.
  """
  return check_equivalence(predicted, gold).match
