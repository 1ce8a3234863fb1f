"""Final-answer extraction from model outputs.

Each style finds the *last* answer of its kind (models often restate or revise; the last
statement is the one they commit to), so a rationale that mentions `\\boxed{2}` before
concluding `\\boxed{3}` yields "3". All functions are pure and never raise on strings.
"""
from __future__ import annotations

import re

STYLES = ("boxed", "gsm8k", "answer_line", "tag", "last_number", "auto")
# `auto` tries the most explicit markers first and only then guesses a bare number.
_AUTO_ORDER = ("boxed", "tag", "gsm8k", "answer_line", "last_number")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
# Strict GSM8K as in lm-eval / verl: "#### <number>", commas allowed inside.
_GSM8K_RE = re.compile(r"####\s*(-?[0-9.,]+)")
_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is\s*)?[:：]?\s*(?:is\s*)?(.+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`), braces matched.

  Returns None when there is no box or its braces never close (a truncated output).
  """
  starts = [m for m in _BOX_RE.finditer(text)]
  for m in reversed(starts):
    i = m.end()
    if i < len(text) and text[i] == "{":
      depth = 0
      for j in range(i, len(text)):
        c = text[j]
        if c == "{" and text[j - 1] != "\\":
          depth += 1
        elif c == "}" and text[j - 1] != "\\":
          depth -= 1
          if depth == 0:
            return text[i + 1:j].strip()
      return None  # unbalanced: truncated inside the box; do not guess
    if i < len(text) and text[i] == " ":
      # `\boxed 5` form (used by some MATH solutions): up to the next `$` or space.
      rest = text[i:].lstrip(" ")
      token = re.split(r"[\s$]", rest, maxsplit=1)[0]
      if token:
        return token
  return None


def _gsm8k(text: str) -> str | None:
  found = _GSM8K_RE.findall(text)
  if not found:
    return None
  value = found[-1].replace(",", "").rstrip(".")
  return value if re.search(r"\d", value) else None


def _tag(text: str) -> str | None:
  found = _TAG_RE.findall(text)
  return found[-1].strip() if found else None


def _answer_line(text: str) -> str | None:
  for line in reversed(text.splitlines()):
    matches = list(_ANSWER_LINE_RE.finditer(line))
    if not matches:
      continue
    value = matches[-1].group(1).strip()
    # "Final Answer: The final answer is $5$" restates the marker: take the innermost.
    inner = _ANSWER_LINE_RE.search(value)
    while inner is not None and inner.group(1).strip() and len(inner.group(1)) < len(value):
      value = inner.group(1).strip()
      inner = _ANSWER_LINE_RE.search(value)
    # Minerva style: "Final Answer: The final answer is $5$. I hope it is correct."
    value = re.sub(r"\.?\s*I hope it is correct\.?$", "", value, flags=re.IGNORECASE)
    value = value.strip().rstrip(".").strip()
    if value.startswith("$") and value.endswith("$") and len(value) >= 2:
      value = value.strip("$").strip()
    if value:
      return value
  return None


def _last_number(text: str) -> str | None:
  found = _NUMBER_RE.findall(text)
  return found[-1].replace(",", "") if found else None


_EXTRACTORS = {
    "boxed": last_boxed,
    "gsm8k": _gsm8k,
    "answer_line": _answer_line,
    "tag": _tag,
    "last_number": _last_number,
}


def extract_answer(text: str, style: str = "auto") -> str | None:
  """Extracts the final answer from a model output.

  Args:
    text: the completion text.
    style: one of "boxed" (last `\\boxed{}`/`\\fbox{}`, braces matched), "gsm8k"
      (`#### n`, commas removed), "answer_line" (`Answer: ...` / `The final answer is
      ...`), "tag" (`<answer>...</answer>`), "last_number", or "auto" (those in the
      order boxed, tag, gsm8k, answer_line, last_number; first that finds one wins).

  Returns:
    The answer string (stripped), or None when the style finds no answer.
  """
  if not isinstance(text, str):
    raise TypeError(f"extract_answer expects text: str, got {type(text).__name__}.")
  if style == "auto":
    for name in _AUTO_ORDER:
      found = _EXTRACTORS[name](text)
      if found is not None and found != "":
        return found
    return None
  if style not in _EXTRACTORS:
    raise ValueError(f"Unknown extraction style {style!r}; choose one of {STYLES}.")
  found = _EXTRACTORS[style](text)
  return found if found else None
