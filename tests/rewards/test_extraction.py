"""Answer extraction on realistic model outputs."""
import pytest

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
  assert set(STYLES) == {"boxed", "gsm8k", "answer_line", "tag", "last_number", "auto"}
