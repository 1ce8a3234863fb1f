"""tfds builders: raw fixture files (each dataset's real format) -> array_record -> common
schema, without TensorFlow; clear errors on malformed raw files."""
import json
import os
import sys

import pytest

from reasoning_jax.data import tfds_builders
from reasoning_jax.data.jsonl import DataFormatError
from reasoning_jax.data.pipeline import PipelineConfig, make_dataset
from reasoning_jax.data.tfds_builders.parsers_math import last_boxed

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  for name in tfds_builders.BUILDERS:
    tfds_builders.prepare(name, manual_dir=os.path.join(FIXTURES, name), data_dir=d)
  return d


def test_no_tensorflow_and_array_record_files(data_dir):
  assert "tensorflow" not in sys.modules
  files = sorted(os.listdir(os.path.join(data_dir, "rj_gsm8k", "1.0.0")))
  assert "rj_gsm8k-train.array_record-00000-of-00001" in files
  assert "rj_gsm8k-test.array_record-00000-of-00001" in files


def _by_id(source):
  return {ex["id"]: ex for ex in (source[i] for i in range(len(source)))}


def test_gsm8k(data_dir):
  train = _by_id(tfds_builders.data_source("gsm8k", "train", data_dir))
  assert len(train) == 3
  ex = train["gsm8k/train/0"]
  assert ex["answer"] == "72"
  assert ex["question"].startswith("Natalia sold clips to 48")
  assert ex["rationale"] == ("Natalia sold 48/2 = 24 clips in May.\n"
                             "Natalia sold 48+24 = 72 clips altogether in April and May.")
  assert ex["context"] == "" and ex["answer_aliases"] == []
  assert train["gsm8k/train/2"]["answer"] == "2000"  # '#### 2,000'
  assert len(tfds_builders.data_source("gsm8k", "test", data_dir)) == 2


def test_math(data_dir):
  train = _by_id(tfds_builders.data_source("math", "train", data_dir))
  assert train["math/train/algebra/1"]["answer"] == "4"
  # The last \boxed wins and nested braces come out whole.
  assert train["math/train/geometry/2"]["answer"] == "\\frac{1}{2}"
  assert train["math/train/geometry/2"]["question"] == (
      "A square has area $\\frac{1}{4}$. What is its side length?")
  test = tfds_builders.data_source("math", "test", data_dir)
  assert test[0]["answer"] == "42" and test[0]["id"] == "math/test/prealgebra/3"


def test_hotpotqa(data_dir):
  val = _by_id(tfds_builders.data_source("hotpotqa", "validation", data_dir))
  ex = val["5a8b57f25542995d1e6f1371"]
  assert ex["answer"] == "yes"
  assert ex["context"] == (
      "Ed Wood: Edward Davis Wood Jr. (October 10, 1924 \u2013 December 10, 1978) was an "
      "American filmmaker. He was born in Poughkeepsie.\n\n"
      "Scott Derrickson: Scott Derrickson (born July 16, 1966) is an American director.")
  assert val["5a8c7595554299585d9e36b6"]["answer"] == "Chief of Protocol"


def test_musique(data_dir):
  val = _by_id(tfds_builders.data_source("musique", "validation", data_dir))
  ex = val["2hop__482757_12019"]
  assert ex["answer"] == "Punjab"
  assert ex["answer_aliases"] == ["Punjab, Pakistan", "Punjab province"]
  assert ex["rationale"] == "Pakistan Super League >> founded in -> Lahore\n#1 >> capital of -> Punjab"
  assert ex["context"].startswith("Pakistan Super League: Pakistan Super League (PSL)")
  assert "\n\nLahore: Lahore is the capital" in ex["context"]
  assert val["2hop__8210_121043"]["answer_aliases"] == []


def test_finqa(data_dir):
  train = _by_id(tfds_builders.data_source("finqa", "train", data_dir))
  ex = train["ADI/2009/page_49.pdf-1"]
  assert ex["answer"] == "0.01639" and ex["answer_aliases"] == ["1.6%"]
  assert ex["rationale"] == "subtract(5829, 5735), divide(#0, 5735)"
  assert ex["context"] == ("interest expense was as follows : ( in millions )\n\n"
                           " | 2009 | 2008\ninterest expense | $ 5829 | $ 5735\n\n"
                           "the change was due to refinancing .")
  assert train["XYZ/2015/page_10.pdf-3"]["answer"] == "94"
  assert train["XYZ/2015/page_10.pdf-3"]["answer_aliases"] == []
  val = tfds_builders.data_source("finqa", "validation", data_dir)
  assert val[0]["answer"] == "yes"


def test_plain_tfds_data_source_reads_prepared_files(data_dir):
  import tensorflow_datasets as tfds
  src = tfds.data_source("rj_gsm8k", split="test", data_dir=str(data_dir), download=False)
  assert len(src) == 2
  answers = sorted(src[i]["answer"] for i in range(2))
  assert answers == [b"17", b"7"]  # tfds returns bytes; tfds_builders.data_source decodes


def test_pipeline_over_tfds_source(data_dir):
  src = tfds_builders.data_source("gsm8k", "train", data_dir)
  cfg = PipelineConfig(batch_size=3, num_epochs=1, seed=0)
  (batch,) = list(make_dataset(src, cfg, shard_index=0, shard_count=1))
  assert sorted(batch["answer"]) == ["10", "2000", "72"]
  assert all(isinstance(a, list) for a in batch["answer_aliases"])


def test_last_boxed():
  assert last_boxed("so $\\boxed{\\frac{a}{b}}$ and") == "\\frac{a}{b}"
  assert last_boxed("\\boxed{1} then \\boxed{2}") == "2"
  assert last_boxed("\\fbox{x+1}") == "x+1"
  assert last_boxed("$\\boxed 5$.") == "5"
  assert last_boxed("\\boxed{unclosed") is None
  assert last_boxed("no box") is None


def _write(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def test_gsm8k_missing_field_and_missing_final_answer(tmp_path):
  manual = tmp_path / "raw"
  good = json.dumps({"question": "q", "answer": "r\n#### 1"})
  _write(str(manual / "train.jsonl"), [good, json.dumps({"question": "q2"})])
  with pytest.raises(DataFormatError, match=r"train\.jsonl:2: missing field 'answer'"):
    tfds_builders.prepare("gsm8k", manual, tmp_path / "out")
  _write(str(manual / "train.jsonl"), [good, json.dumps({"question": "q", "answer": "7"})])
  with pytest.raises(DataFormatError, match=r"train\.jsonl:2: GSM8K answer has no '#### "):
    tfds_builders.prepare("gsm8k", manual, tmp_path / "out2")


def test_other_raw_format_errors(tmp_path):
  _write(str(tmp_path / "m" / "MATH" / "train" / "algebra" / "7.json"),
         [json.dumps({"problem": "p", "solution": "no box here"})])
  with pytest.raises(DataFormatError, match=r"7\.json: solution has no \\boxed"):
    tfds_builders.prepare("math", tmp_path / "m", tmp_path / "o1")
  _write(str(tmp_path / "mu" / "musique_ans_v1.0_dev.jsonl"),
         [json.dumps({"question": "q", "answer": "a", "paragraphs": [{"title": "t"}]})])
  with pytest.raises(DataFormatError, match=r"dev\.jsonl:1: paragraphs\[0\]: missing field 'paragraph_text'"):
    tfds_builders.prepare("musique", tmp_path / "mu", tmp_path / "o2")
  _write(str(tmp_path / "f" / "train.json"),
         [json.dumps([{"pre_text": [], "post_text": [], "table": [], "qa": {"question": "q"}}])])
  with pytest.raises(DataFormatError, match=r"train\.json: example 0: qa has neither 'exe_ans' nor 'answer'"):
    tfds_builders.prepare("finqa", tmp_path / "f", tmp_path / "o3")
  _write(str(tmp_path / "h" / "hotpot_dev_distractor_v1.json"), [json.dumps({"not": "a list"})])
  with pytest.raises(DataFormatError, match="expected a JSON list"):
    tfds_builders.prepare("hotpotqa", tmp_path / "h", tmp_path / "o4")


def test_missing_files_and_unprepared(tmp_path, data_dir):
  (tmp_path / "raw").mkdir()
  (tmp_path / "raw" / "README").write_text("wrong files")
  with pytest.raises(DataFormatError, match="(?s)no raw files found.*train.jsonl"):
    tfds_builders.prepare("gsm8k", tmp_path / "raw", tmp_path / "out")
  with pytest.raises(ValueError, match="not prepared"):
    tfds_builders.data_source("gsm8k", "train", tmp_path / "empty")
  with pytest.raises(ValueError, match=r"no split 'validation'; available: \['test', 'train'\]"):
    tfds_builders.data_source("gsm8k", "validation", data_dir)
  with pytest.raises(ValueError, match="Unknown dataset 'gsm9k'"):
    tfds_builders.data_source("gsm9k", "train", data_dir)
