"""Raw HotPotQA, MuSiQue and FinQA files -> common-schema examples (pure Python, no tfds).

Context passages are rendered as text the same way for every QA set: one paragraph per
block, `<title>: <text>`, blocks separated by a blank line, so prompts look alike across
datasets. FinQA tables become rows of ' | '-separated cells.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from reasoning_jax.data.jsonl import DataFormatError, iter_jsonl, require_fields


def _load_json_list(path: str) -> list[Any]:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}).") from e
  if not isinstance(data, list):
    raise DataFormatError(f"{path}: expected a JSON list of examples, got {type(data).__name__}.")
  return data


def _paragraphs(items: Sequence[tuple[str, str]]) -> str:
  return "\n\n".join(f"{title}: {text.strip()}" for title, text in items)


def parse_hotpotqa(path: str, split: str) -> Iterator[dict[str, Any]]:
  """Examples from a HotPotQA JSON list (`_id`, `question`, `answer`,
  `context` = [[title, [sentence, ...]], ...])."""
  for i, row in enumerate(_load_json_list(path)):
    where = f"{path}: example {i}"
    require_fields(row, ("question", "answer", "context"), where)
    try:
      paras = [(title, "".join(sentences)) for title, sentences in row["context"]]
    except (TypeError, ValueError) as e:
      raise DataFormatError(f"{where}: 'context' must be [[title, [sentences]], ...].") from e
    yield {"id": str(row.get("_id", f"hotpotqa/{split}/{i}")), "question": row["question"],
           "answer": str(row["answer"]), "rationale": "", "context": _paragraphs(paras),
           "answer_aliases": []}


def parse_musique(path: str, split: str) -> Iterator[dict[str, Any]]:
  """Examples from a MuSiQue JSONL file (`id`, `question`, `answer`, `answer_aliases`,
  `paragraphs` = [{title, paragraph_text}], optional `question_decomposition`)."""
  for lineno, row in iter_jsonl(path):
    where = f"{path}:{lineno}"
    require_fields(row, ("question", "answer", "paragraphs"), where)
    paras = []
    for j, p in enumerate(row["paragraphs"]):
      require_fields(p, ("title", "paragraph_text"), f"{where}: paragraphs[{j}]")
      paras.append((p["title"], p["paragraph_text"]))
    # The decomposition is the gold reasoning chain: sub-question -> sub-answer per hop.
    steps = [f"{d['question']} -> {d['answer']}" for d in row.get("question_decomposition") or []
             if "question" in d and "answer" in d]
    yield {"id": str(row.get("id", f"musique/{split}/{lineno - 1}")), "question": row["question"],
           "answer": str(row["answer"]), "rationale": "\n".join(steps),
           "context": _paragraphs(paras),
           "answer_aliases": [str(a) for a in row.get("answer_aliases") or []]}


def format_number(x: Any) -> str:
  """FinQA's executed answer as text: 94.0 -> '94', 0.25 -> '0.25', 'yes' -> 'yes'."""
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, (int, float)):
    return str(int(x)) if float(x).is_integer() else repr(float(x))
  return str(x)


def _table(rows: Sequence[Sequence[Any]]) -> str:
  return "\n".join(" | ".join(str(c).strip() for c in row) for row in rows)


def parse_finqa(path: str, split: str) -> Iterator[dict[str, Any]]:
  """Examples from a FinQA JSON list (`id`, `pre_text`, `post_text`, `table`,
  `qa` = {question, exe_ans and/or answer, program})."""
  for i, row in enumerate(_load_json_list(path)):
    where = f"{path}: example {i}"
    require_fields(row, ("qa", "pre_text", "post_text", "table"), where)
    qa = row["qa"]
    require_fields(qa, ("question",), f"{where}: qa")
    # exe_ans (the executed program) is what FinQA's execution accuracy scores; the
    # written answer ('94%') is kept as an alias when it says something different.
    if qa.get("exe_ans") is not None and qa.get("exe_ans") != "":
      answer = format_number(qa["exe_ans"])
    elif qa.get("answer") not in (None, ""):
      answer = str(qa["answer"])
    else:
      raise DataFormatError(f"{where}: qa has neither 'exe_ans' nor 'answer'.")
    aliases = [str(qa["answer"])] if qa.get("answer") not in (None, "", answer) else []
    context = "\n\n".join(part for part in (" ".join(row["pre_text"]).strip(), _table(row["table"]),
                                            " ".join(row["post_text"]).strip()) if part)
    yield {"id": str(row.get("id", f"finqa/{split}/{i}")), "question": qa["question"],
           "answer": answer, "rationale": str(qa.get("program") or ""), "context": context,
           "answer_aliases": aliases}
