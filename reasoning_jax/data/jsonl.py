"""JSONL loading with errors that name the file, the line and the field.

One JSON object per line; blank lines are skipped. `load_jsonl` checks every row for the
required fields as it reads, so a bad row fails at load time with
`path:line: missing field 'answer' (fields present: ...)` rather than as a KeyError deep
inside a training step. `load_examples` additionally maps rows onto the common example
schema used by every reasoning_jax data source:

    {"id": str, "question": str, "answer": str, "rationale": str, "context": str,
     "answer_aliases": list[str]}
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

COMMON_FIELDS = ("id", "question", "answer", "rationale", "context", "answer_aliases")


class DataFormatError(ValueError):
  """A data file does not have the expected format; the message names file and line."""


# A byte that is not UTF-8, as `errors="surrogateescape"` decodes it (valid UTF-8 text
# never decodes to a lone surrogate, and JSON's "\\udc80" escapes are plain ASCII).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields `(line_number, row)` for each non-blank line of a JSONL file (1-based lines).

  The file is UTF-8 (a leading byte-order mark is skipped).

  Raises:
    FileNotFoundError: the file does not exist (or is a directory).
    DataFormatError: a line is not UTF-8, not valid JSON or not a JSON object.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    what = "is a directory, not a file" if os.path.isdir(path) else "not found"
    raise FileNotFoundError(f"JSONL file {what}: {path}")
  with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
    for lineno, line in enumerate(f, start=1):
      bad = _NOT_UTF8.search(line)
      if bad:
        byte = ord(bad.group()) - 0xDC00
        raise DataFormatError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{byte:02x} at column "
            f"{bad.start() + 1}); save the file as UTF-8.")
      if not line.strip():
        continue
      yield lineno, _parse(line, f"{path}:{lineno}")


def _parse(line: str, where: str) -> dict[str, Any]:
  """One line's JSON object, or a DataFormatError naming `where`."""
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{where}: invalid JSON ({e.msg} at column {e.colno}).") from e
  except (ValueError, RecursionError) as e:  # e.g. a 5,000-digit integer, deep nesting
    raise DataFormatError(f"{where}: invalid JSON ({type(e).__name__}: "
                          f"{str(e)[:200]}).") from e
  if not isinstance(row, dict):
    raise DataFormatError(
        f"{where}: expected a JSON object per line, got {type(row).__name__}.")
  return row


def require_fields(row: Mapping[str, Any], fields: Sequence[str], where: str) -> None:
  """Raises DataFormatError naming `where` (e.g. 'file:line') and the first missing field."""
  for field in fields:
    if field not in row or row[field] is None:
      raise DataFormatError(
          f"{where}: missing field {field!r} (fields present: {sorted(row)}). Every row "
          f"needs {list(fields)}.")


def load_jsonl(path: str | os.PathLike, required_fields: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Reads a JSONL file into a list of dicts, checking `required_fields` on every row.

  The returned list is a random-access source for `pipeline.make_dataset`.
  """
  rows = []
  for lineno, row in iter_jsonl(path):
    require_fields(row, required_fields, f"{os.fspath(path)}:{lineno}")
    rows.append(row)
  return rows


def _as_str(value: Any, where: str, field: str) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise DataFormatError(
        f"{where}: field {field!r} must be a string or number, got {type(value).__name__}.")
  return str(value)


def to_example(row: Mapping[str, Any], where: str, *, default_id: str,
               field_map: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Maps one raw row onto the common schema.

  Args:
    row: the raw dict.
    where: location for error messages ('file:line').
    default_id: id used when the row has none (e.g. 'file:line').
    field_map: common-schema name -> raw name, for files that spell fields differently
      (e.g. {'question': 'problem'}).
  """
  fm = dict(field_map or {})
  src = {name: fm.get(name, name) for name in COMMON_FIELDS}
  require_fields(row, [src["question"], src["answer"]], where)
  aliases = row.get(src["answer_aliases"]) or []
  if not isinstance(aliases, list):
    raise DataFormatError(f"{where}: field {src['answer_aliases']!r} must be a list of strings.")
  return {
      "id": _as_str(row.get(src["id"], default_id), where, src["id"]),
      "question": _as_str(row[src["question"]], where, src["question"]),
      "answer": _as_str(row[src["answer"]], where, src["answer"]),
      "rationale": _as_str(row.get(src["rationale"]) or "", where, src["rationale"]),
      "context": _as_str(row.get(src["context"]) or "", where, src["context"]),
      "answer_aliases": [_as_str(a, where, src["answer_aliases"]) for a in aliases],
  }


def load_examples(path: str | os.PathLike,
                  field_map: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
  """Loads a JSONL file of question/answer rows as common-schema examples.

  Each row needs a question and an answer (under the names in `field_map`, by default
  'question' and 'answer'); 'id', 'rationale', 'context' and 'answer_aliases' are
  optional. A row without an id gets '<file name>:<line>'.
  """
  name = os.path.basename(os.fspath(path))
  return [
      to_example(row, f"{os.fspath(path)}:{lineno}", default_id=f"{name}:{lineno}",
                 field_map=field_map)
      for lineno, row in iter_jsonl(path)
  ]
