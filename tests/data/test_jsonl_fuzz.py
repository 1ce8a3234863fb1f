"""Fuzzing the JSONL loader (hypothesis): random bytes, lines and JSON rows with missing
fields and wrong types either load or raise an error that names the file; never
anything else."""
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasoning_jax.data.jsonl import DataFormatError, load_examples, load_jsonl

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=4), inner, max_size=3),
    max_leaves=8)
FIELDS = st.sampled_from(["id", "question", "answer", "rationale", "context",
                          "answer_aliases", "problem", "x"])
ROWS = st.dictionaries(FIELDS, JSON_VALUES, max_size=6)


def _json_line(row) -> bytes:
  return json.dumps(row).encode()


LINES = st.one_of(
    ROWS.map(_json_line),
    JSON_VALUES.map(_json_line),                       # arrays, numbers, null
    st.binary(max_size=40),                            # any bytes, non-UTF-8 included
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"  ", b"\r", b"\xef\xbb\xbf{}", b"{", b"[[[[", b'{"a": NaN}',
                     b'{"question": "q", "answer": 1e999}']),
)
CONTENT = st.lists(LINES, max_size=6).map(b"\n".join)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT, field_map=st.sampled_from([None, {"question": "problem"}]))
def test_the_loader_succeeds_or_names_the_file(tmp_path, content, field_map):
  path = tmp_path / "fuzz.jsonl"
  path.write_bytes(content)
  for load in (lambda: load_jsonl(path, ("question", "answer")),
               lambda: load_examples(path, field_map)):
    try:
      rows = load()
    except DataFormatError as e:
      # file:line, the line a real one of the file
      where = str(e).split(": ")[0]
      assert where.startswith(f"{path}:"), str(e)
      line = int(where.rsplit(":", 1)[1])
      assert 1 <= line <= content.count(b"\n") + 1 + content.count(b"\r"), str(e)
    else:
      assert all(isinstance(r, dict) for r in rows)


def test_a_missing_file_is_named(tmp_path):
  path = os.path.join(tmp_path, "absent.jsonl")
  for load in (load_jsonl, load_examples):
    try:
      load(path)
    except FileNotFoundError as e:
      assert path in str(e)
    else:
      raise AssertionError("a missing file loaded")
