"""JSONL loading: common-schema mapping and errors that name file, line and field."""
import json

import pytest

from reasoning_jax.data.jsonl import DataFormatError, load_examples, load_jsonl


def _write(tmp_path, lines, name="d.jsonl"):
  p = tmp_path / name
  p.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return p


def test_load_examples_maps_to_common_schema(tmp_path):
  p = _write(tmp_path, [
      json.dumps({"id": "a", "question": "1+1?", "answer": 2, "rationale": "one plus one",
                  "extra": 5}),
      "",
      json.dumps({"id": 7, "question": "héllo?", "answer": "x", "context": "ctx",
                  "answer_aliases": ["X", 3]}),
  ])
  assert load_examples(p) == [
      {"id": "a", "question": "1+1?", "answer": "2", "rationale": "one plus one", "context": "",
       "answer_aliases": []},
      {"id": "7", "question": "héllo?", "answer": "x", "rationale": "", "context": "ctx",
       "answer_aliases": ["X", "3"]},
  ]


def test_field_map_and_defaults(tmp_path):
  p = _write(tmp_path, [json.dumps({"q": "1+1?", "a": 2}), json.dumps({"q": "héllo?", "a": "x",
                                                                       "answer_aliases": ["X"]})])
  rows = load_examples(p, field_map={"question": "q", "answer": "a"})
  assert rows == [
      {"id": "d.jsonl:1", "question": "1+1?", "answer": "2", "rationale": "", "context": "",
       "answer_aliases": []},
      {"id": "d.jsonl:2", "question": "héllo?", "answer": "x", "rationale": "", "context": "",
       "answer_aliases": ["X"]},
  ]


def test_missing_field_names_file_line_and_field(tmp_path):
  p = _write(tmp_path, [json.dumps({"question": "q1", "answer": "1"}), "",
                        json.dumps({"question": "q2"})])
  with pytest.raises(DataFormatError) as e:
    load_examples(p)
  msg = str(e.value)
  assert f"{p}:3" in msg and "missing field 'answer'" in msg and "'question'" in msg


def test_load_jsonl_required_fields(tmp_path):
  p = _write(tmp_path, [json.dumps({"a": 1, "b": 2}), json.dumps({"a": 3})])
  assert load_jsonl(p, ["a"]) == [{"a": 1, "b": 2}, {"a": 3}]
  with pytest.raises(DataFormatError, match=r"d\.jsonl:2: missing field 'b'"):
    load_jsonl(p, ["a", "b"])


def test_invalid_json_and_non_object_lines(tmp_path):
  p = _write(tmp_path, [json.dumps({"a": 1}), "{not json"])
  with pytest.raises(DataFormatError, match=r"d\.jsonl:2: invalid JSON"):
    load_jsonl(p)
  p = _write(tmp_path, ["[1, 2]"], name="e.jsonl")
  with pytest.raises(DataFormatError, match=r"e\.jsonl:1: expected a JSON object"):
    load_jsonl(p)


def test_wrong_type_and_missing_file(tmp_path):
  p = _write(tmp_path, [json.dumps({"question": ["not", "a", "string"], "answer": "1"})])
  with pytest.raises(DataFormatError, match="field 'question' must be a string"):
    load_examples(p)
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    load_jsonl(tmp_path / "nope.jsonl")


def test_bytes_that_are_not_utf8_name_the_file_line_and_column(tmp_path):
  p = tmp_path / "latin1.jsonl"
  p.write_bytes(b'{"question": "a", "answer": "1"}\n'
                b'{"question": "caf\xe9", "answer": "2"}\n')
  with pytest.raises(DataFormatError) as info:
    load_examples(p)
  assert str(info.value) == (f"{p}:2: not UTF-8 text (byte 0xe9 at column 18); save the "
                             "file as UTF-8.")
  with pytest.raises(DataFormatError, match=r"latin1\.jsonl:2: not UTF-8"):
    load_jsonl(p)


def test_escaped_surrogates_and_a_byte_order_mark_are_valid_utf8(tmp_path):
  p = tmp_path / "bom.jsonl"
  p.write_bytes(b'\xef\xbb\xbf{"question": "\\udc80?", "answer": "1"}\n')
  assert load_jsonl(p) == [{"question": "\udc80?", "answer": "1"}]


def test_json_that_python_refuses_names_the_line(tmp_path):
  p = _write(tmp_path, [json.dumps({"q": 1}), "[" * 100_000 + "]" * 100_000,
                        '{"n": ' + "9" * 5000 + "}"])
  with pytest.raises(DataFormatError, match=r"d\.jsonl:2: invalid JSON \(RecursionError"):
    load_jsonl(p)
  p = _write(tmp_path, ['{"n": ' + "9" * 5000 + "}"], name="big.jsonl")
  with pytest.raises(DataFormatError, match=r"big\.jsonl:1: invalid JSON \(ValueError: "
                     "Exceeds the limit"):
    load_jsonl(p)


def test_a_directory_is_not_a_jsonl_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"is a directory, not a file: {tmp_path}"):
    load_jsonl(tmp_path)
