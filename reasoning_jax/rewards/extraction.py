"""Final-answer extraction from model outputs.

Each style finds the *last* answer of its kind (models often restate or revise; the last
statement is the one they commit to), so a rationale that mentions `\\boxed{2}` before
concluding `\\boxed{3}` yields "3". All functions are pure and never raise on strings.
"""
from __future__ import annotations

import re

STYLES = ("boxed", "gsm8k", "answer_line", "tag", "last_number", "first_line", "auto")
# `auto` tries the most explicit markers first and only then guesses a bare number.
_AUTO_ORDER = ("boxed", "tag", "gsm8k", "answer_line", "last_number")

_BOX_WORDS = ("\\boxed", "\\fbox")
# Strict GSM8K as in lm-eval / verl: "#### <number>", commas allowed inside.
_GSM8K_RE = re.compile(r"####\s*(-?[0-9.,]+)")
# A brace not escaped by a backslash (`\\{` is a literal brace inside a box).
_BRACE_RE = re.compile(r"(?<!\\)[{}]")
_SPACED_BOX_RE = re.compile(r" *([^\s$]*)")
_TAG_TOKEN_RE = re.compile(r"<(/?)answer>", re.IGNORECASE)
# "Answer:", "The final answer is", ... up to the value (which must be non-empty).
_ANSWER_MARK_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is\s*)?[:：]?\s*(?:is\s*)?(?=.)", re.IGNORECASE)
_SPACES_RE = re.compile(r"\s*")
_HOPE = "I hope it is correct"
_HOPE_RE = re.compile(re.escape(_HOPE) + r"\.?\Z", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _box_ends_reversed(text: str):
  """The end offset of every `\\boxed` / `\\fbox`, last first, one `rfind` each: no
  list of every match (a million match objects cost the garbage collector more than
  linear time), no rescan (the two words cannot overlap)."""
  found = {w: text.rfind(w) for w in _BOX_WORDS}
  while True:
    word = max(found, key=found.get)
    i = found[word]
    if i < 0:
      return
    yield i + len(word)
    found[word] = text.rfind(word, 0, i)


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`), braces matched.

  Returns None when there is no box or its braces never close (a truncated output).
  Linear in the text: at most one box's braces are scanned (the last box with a brace
  either closes or ends the search), and every other box costs O(1).
  """
  for i in _box_ends_reversed(text):
    if i < len(text) and text[i] == "{":
      depth = 0
      for b in _BRACE_RE.finditer(text, i):
        depth += 1 if b.group() == "{" else -1
        if depth == 0:
          return text[i + 1:b.start()].strip()
      return None  # unbalanced: truncated inside the box; do not guess
    if i < len(text) and text[i] == " ":
      # `\boxed 5` form (used by some MATH solutions): up to the next `$` or space.
      token = _SPACED_BOX_RE.match(text, i).group(1)
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
  """The last `<answer>...</answer>`, as `re.findall("<answer>(.*?)</answer>", text,
  re.S | re.I)[-1]` would give, in one pass over the tags (findall rescans to the end
  for every unclosed `<answer>`)."""
  start, found = None, None
  for m in _TAG_TOKEN_RE.finditer(text):
    if not m.group(1) and start is None:
      start = m.end()
    elif m.group(1) and start is not None:
      found, start = text[start:m.start()], None
  return found.strip() if found is not None else None


def _answer_line(text: str) -> str | None:
  """The value after the last line's `Answer:` marker (innermost restatement).

  `_ANSWER_MARK_RE` is the marker pattern `<marker>(.+)` with `(?=.)` for the one
  character `.+` needs, so it ends where that group would start and the value is the
  rest of the line, never re-matched: a line of k restated markers is one pass rather
  than k.
  """
  for line in reversed(text.splitlines()):
    m = _ANSWER_MARK_RE.search(line)
    if m is None:
      continue
    value = line[m.end():].strip()
    # "Final Answer: The final answer is $5$" restates the marker: take the innermost.
    # `value` is stripped, so whatever follows a marker inside it is non-blank.
    pos = 0
    inner = _ANSWER_MARK_RE.search(value)
    while inner is not None:
      pos = _SPACES_RE.match(value, inner.end()).end()
      inner = _ANSWER_MARK_RE.search(value, pos)
    value = _strip_hope(value[pos:])
    value = value.strip().rstrip(".").strip()
    if value.startswith("$") and value.endswith("$") and len(value) >= 2:
      value = value.strip("$").strip()
    if value:
      return value
  return None


def _strip_hope(value: str) -> str:
  """Drops Minerva's closing "I hope it is correct." (with the "." and spaces before
  it), as `re.sub(r"\\.?\\s*I hope it is correct\\.?$", "", value, flags=re.I)` does,
  looking only at the end (that pattern retries its `\\s*` from every position)."""
  tail = _HOPE_RE.search(value[-len(_HOPE) - 1:])
  if tail is None:
    return value
  head = value[:len(value) - len(tail.group())].rstrip()
  return head[:-1] if head.endswith(".") else head


def _last_number(text: str) -> str | None:
  found = _NUMBER_RE.findall(text)
  return found[-1].replace(",", "") if found else None


def _first_line(text: str) -> str | None:
  """The first non-blank line, stripped: the bare answer a task's marker precedes
  (`MathReward(answer_after=...)`), which has no answer markup of its own."""
  return text.lstrip().split("\n", 1)[0].strip() or None


_EXTRACTORS = {
    "boxed": last_boxed,
    "gsm8k": _gsm8k,
    "answer_line": _answer_line,
    "tag": _tag,
    "last_number": _last_number,
    "first_line": _first_line,
}


def extract_answer(text: str, style: str = "auto") -> str | None:
  """Extracts the final answer from a model output.

  Args:
    text: the completion text.
    style: one of "boxed" (last `\\boxed{}`/`\\fbox{}`, braces matched), "gsm8k"
      (`#### n`, commas removed), "answer_line" (`Answer: ...` / `The final answer is
      ...`), "tag" (`<answer>...</answer>`), "last_number", "first_line" (the first
      non-blank line, for a bare answer after a marker), or "auto" (boxed, tag, gsm8k,
      answer_line, last_number in that order; first that finds one wins).

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
