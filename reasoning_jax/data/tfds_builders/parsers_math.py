"""Raw GSM8K and MATH files -> common-schema examples (pure Python, no tfds).

Common schema: {"id", "question", "answer" (final gold answer string), "rationale",
"context", "answer_aliases"}.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

from reasoning_jax.data.jsonl import DataFormatError, iter_jsonl, require_fields

# GSM8K rationales carry calculator annotations, "48/2 = <<48/2=24>>24": tool markup the
# dataset authors used for generation, not text a model should learn to write.
_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_split_answer(answer: str, where: str) -> tuple[str, str]:
  """Splits a GSM8K answer field into (rationale, final answer).

  The final answer is what follows the last '####', with thousands separators removed
  (the dataset writes e.g. '#### 1,000').
  """
  if "####" not in answer:
    raise DataFormatError(f"{where}: GSM8K answer has no '#### <number>' final-answer line.")
  rationale, final = answer.rsplit("####", 1)
  final = final.strip().replace(",", "")
  if not final:
    raise DataFormatError(f"{where}: GSM8K answer has an empty final answer after '####'.")
  return _CALC.sub("", rationale).strip(), final


def parse_gsm8k(path: str, split: str) -> Iterator[dict[str, Any]]:
  """Examples from a GSM8K JSONL file (`question`, `answer` ending in '#### n')."""
  for lineno, row in iter_jsonl(path):
    where = f"{path}:{lineno}"
    require_fields(row, ("question", "answer"), where)
    rationale, final = gsm8k_split_answer(row["answer"], where)
    yield {"id": f"gsm8k/{split}/{lineno - 1}", "question": row["question"].strip(),
           "answer": final, "rationale": rationale, "context": "", "answer_aliases": []}


def last_boxed(text: str) -> str | None:
  r"""Content of the last `\boxed{...}` (or `\fbox{...}`, or `\boxed 5`) in `text`.

  Braces are matched, so nested groups such as `\boxed{\frac{1}{2}}` come out whole.
  Returns None if there is no complete boxed expression.
  """
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
  if text.startswith(" ", i):  # '\boxed 5': the argument runs to the next '$' or space
    m = re.match(r" +([^\s$]+)", text[i:])
    return m.group(1) if m else None
  if not text.startswith("{", i):
    return None
  depth = 0
  for j in range(i, len(text)):
    if text[j] == "{":
      depth += 1
    elif text[j] == "}":
      depth -= 1
      if depth == 0:
        return text[i + 1:j]
  return None


def _math_split_dir(manual_dir: str, split: str) -> str | None:
  for candidate in (os.path.join(manual_dir, "MATH", split), os.path.join(manual_dir, split)):
    if os.path.isdir(candidate):
      return candidate
  return None


def parse_math(manual_dir: str, split: str) -> Iterator[dict[str, Any]]:
  """Examples from MATH's `<split>/<subject>/<n>.json` files (`problem`, `solution`)."""
  root = _math_split_dir(manual_dir, split)
  if root is None:
    return
  for subject in sorted(os.listdir(root)):
    sub = os.path.join(root, subject)
    if not os.path.isdir(sub):
      continue
    for name in sorted(os.listdir(sub)):
      if not name.endswith(".json"):
        continue
      path = os.path.join(sub, name)
      try:
        with open(path, encoding="utf-8") as f:
          row = json.load(f)
      except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}).") from e
      require_fields(row, ("problem", "solution"), path)
      answer = last_boxed(row["solution"])
      if answer is None:
        raise DataFormatError(f"{path}: solution has no \\boxed{{...}} final answer.")
      yield {"id": f"math/{split}/{subject}/{name[:-len('.json')]}", "question": row["problem"],
             "answer": answer.strip(), "rationale": row["solution"], "context": "",
             "answer_aliases": []}


def math_splits(manual_dir: str) -> list[str]:
  """The MATH splits present under `manual_dir`."""
  return [s for s in ("train", "test") if _math_split_dir(manual_dir, s) is not None]
