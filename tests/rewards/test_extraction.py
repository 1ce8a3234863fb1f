"""Answer extraction on realistic model outputs, equal to the old (quadratic)
extraction on fuzzed inputs, and linear in its input."""
import math
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasoning_jax.rewards import STYLES, extract_answer, last_boxed

MULTI_BOX = ("First I guessed \\boxed{2}, but checking again the sum is 3.\n"
             "So the answer is $\\boxed{3}$.")
NESTED = "Thus $x = \\boxed{\\frac{\\sqrt{2}}{2}}$ and we are done."
DEEP = "\\boxed{\\left\\{ \\frac{1}{2}, \\frac{\\pi}{\\sqrt{3}} \\right\\}}"
GSM = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
       "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72")
MINERVA = ("We have $x=5$.\nFinal Answer: The final answer is $5$. "
           "I hope it is correct.")
TAGGED = ("<think>2+2 is 4, maybe 5? no, 4</think>\n<answer> 4 </answer>"
          "<analysis>sure</analysis><confidence>0.9</confidence>")


@pytest.mark.parametrize("text,style,expected", [
    (MULTI_BOX, "boxed", "3"),
    (MULTI_BOX, "auto", "3"),
    (NESTED, "boxed", "\\frac{\\sqrt{2}}{2}"),
    (DEEP, "boxed", "\\left\\{ \\frac{1}{2}, \\frac{\\pi}{\\sqrt{3}} \\right\\}"),
    ("The area is \\fbox{12} square units.", "boxed", "12"),
    ("so \\boxed 5$ is it", "boxed", "5"),
    ("Truncated: \\boxed{\\frac{1}{2", "boxed", None),   # unbalanced: no guess
    ("no box here, the answer is 7", "boxed", None),
    (GSM, "gsm8k", "72"),
    (GSM, "auto", "72"),
    ("#### 1,234.", "gsm8k", "1234"),
    ("#### -5\nlater text #### 6", "gsm8k", "6"),
    ("####", "gsm8k", None),
    (MINERVA, "answer_line", "5"),
    ("reasoning...\nAnswer: Paris", "answer_line", "Paris"),
    ("The final answer is 12.", "answer_line", "12"),
    (TAGGED, "tag", "4"),
    (TAGGED, "auto", "4"),
    ("<answer>1</answer> then <answer>2</answer>", "tag", "2"),
    ("<answer>unclosed", "tag", None),
    ("He has 3 apples and buys 1,200 more: 1,203", "last_number", "1203"),
    ("temperature fell to -4.5 degrees", "last_number", "-4.5"),
    ("no digits at all", "last_number", None),
    ("", "auto", None),
    ("I cannot solve this problem.", "auto", None),
    # auto prefers an explicit marker over a later bare number
    ("\\boxed{10} (computed in 3 steps)", "auto", "10"),
])
def test_extract(text, style, expected):
  assert extract_answer(text, style) == expected


def test_last_boxed_skips_escaped_braces():
  assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"


def test_unknown_style_and_bad_type():
  with pytest.raises(ValueError, match="Unknown extraction style 'box'.*boxed"):
    extract_answer("x", "box")
  with pytest.raises(TypeError, match="text: str"):
    extract_answer(None)  # type: ignore[arg-type]
  assert set(STYLES) == {"boxed", "gsm8k", "answer_line", "tag", "last_number",
                         "first_line", "auto"}


def test_first_line():
  assert extract_answer("\n  (x^2+x+1)(x^2-x+1) \nmore text", "first_line") == \
      "(x^2+x+1)(x^2-x+1)"
  assert extract_answer("yes", "first_line") == "yes"
  assert extract_answer(" \n\t", "first_line") is None


# ---------------------------------------------------------------- the old extraction
# The quadratic implementation the linear one replaced, kept as the reference its
# answers must equal on every input (it is only run on short strings here).

_OLD_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_OLD_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_OLD_LINE_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is\s*)?[:：]?\s*(?:is\s*)?(.+)", re.IGNORECASE)


def _old_boxed(text):
  for m in reversed(list(_OLD_BOX_RE.finditer(text))):
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
      return None
    if i < len(text) and text[i] == " ":
      token = re.split(r"[\s$]", text[i:].lstrip(" "), maxsplit=1)[0]
      if token:
        return token
  return None


def _old_tag(text):
  found = _OLD_TAG_RE.findall(text)
  return found[-1].strip() if found else None


def _old_answer_line(text):
  for line in reversed(text.splitlines()):
    matches = list(_OLD_LINE_RE.finditer(line))
    if not matches:
      continue
    value = matches[-1].group(1).strip()
    inner = _OLD_LINE_RE.search(value)
    while inner is not None and inner.group(1).strip() and len(inner.group(1)) < len(value):
      value = inner.group(1).strip()
      inner = _OLD_LINE_RE.search(value)
    value = re.sub(r"\.?\s*I hope it is correct\.?$", "", value, flags=re.IGNORECASE)
    value = value.strip().rstrip(".").strip()
    if value.startswith("$") and value.endswith("$") and len(value) >= 2:
      value = value.strip("$").strip()
    if value:
      return value
  return None


OLD = {"boxed": _old_boxed, "tag": _old_tag, "answer_line": _old_answer_line}
PIECES = ["\\boxed", "\\fbox", "{", "}", "\\{", "\\}", " ", "  ", "$", "\n", "\r", "\t",
          "\u2028", "\xa0", "<answer>", "</answer>", "<ANSWER>", "</Answer>", "Answer",
          "answer", "final", "Final  answer", ":", "：", "is", " is ", ".", "..",
          "I hope it is correct", "i HOPE it is correct.", "5", "x", "é"]


@settings(max_examples=2000, deadline=None)
@given(text=st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
       | st.text(max_size=60), style=st.sampled_from(sorted(OLD)))
def test_linear_extraction_equals_the_old_one(text, style):
  old = OLD[style](text)
  assert extract_answer(text, style) == (old if old else None)


# ------------------------------------------------------------------- linear time

def _seconds(fn, text: str) -> float:
  """This process's CPU seconds (not wall time: time spent waiting while other
  processes run does not count), the fastest of three runs."""
  best = math.inf
  for _ in range(3):
    t0 = time.process_time()
    fn(text)
    best = min(best, time.process_time() - t0)
  return best


MB = 1 << 20
# Inputs that made some style superlinear, or could: restated markers, unclosed boxes
# and tags, spaced boxes with no token, long digit and whitespace runs.
ADVERSARIAL = {
    "answer_line": "Answer: ",
    "answer_line_is": "The final answer is ",
    "answer_line_spaces": "Answer: x" + " " * 4096 + "y ",
    "boxed": "\\boxed{",
    "boxed_spaced": "\\boxed $",
    "tag": "<answer>",
    "gsm8k": "#### ",
    "gsm8k_digits": "####" + "1," * 2048,
    "digits": "1234567890",
    "thousands": "1,234,",
    "hope": ". I hope it is correct " + " " * 64,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_extraction_is_linear_on_adversarial_inputs(name):
  """1 MB of each adversarial input is extracted (every style, `auto` included) in
  under 0.5 s of CPU time, and 16 times the input takes less than 128 times as long.

  Linear time gives a ratio of 16 and quadratic 256: the 8x margin above linear keeps
  the ratio check from flaking when a shared core's caches are contended (a loaded
  2-core machine measured 81 once for a linear case), while a quadratic regression
  still fails by 2x; CPU time and the best of three runs discount other processes,
  and 0.5 s (the issue's bound) is several times what linear extraction needs."""
  unit = ADVERSARIAL[name]
  big = unit * (MB // len(unit))
  small = big[:len(big) // 16]
  for style in STYLES:
    fn = lambda t, s=style: extract_answer(t, s)  # noqa: E731
    t_big = _seconds(fn, big)
    assert t_big < 0.5, (name, style, t_big)
    t_small = max(_seconds(fn, small), 1e-4)
    assert t_big / t_small < 128, (name, style, t_big, t_small)
