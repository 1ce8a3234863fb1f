"""tfds builders for GSM8K, MATH, HotPotQA, MuSiQue and FinQA from manually downloaded files.

Each builder reads the dataset's raw files from `manual_dir` (never downloads), maps them to
the common schema and writes array_record shards, readable with `tfds.data_source`. This
works without TensorFlow: tfds (>= 4.9) writes array_record and decodes examples with its
numpy codepath, which the tests check in an environment where TensorFlow is not installed.

Registered names are prefixed `rj_` because tfds already has its own `gsm8k` and `math_dataset`
(which download; ours read local files and share one schema).
"""
from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds

from reasoning_jax.data.jsonl import DataFormatError
from reasoning_jax.data.tfds_builders import parsers_math, parsers_qa


def common_features() -> tfds.features.FeaturesDict:
  """The tfds features spec of the common example schema."""
  text = tfds.features.Text
  return tfds.features.FeaturesDict({
      "id": text(), "question": text(), "answer": text(), "rationale": text(),
      "context": text(), "answer_aliases": tfds.features.Sequence(text()),
  })


class _ManualQABuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared logic: find the raw files per split in manual_dir, parse, write."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Common schema, read from manually downloaded files."}
  HOMEPAGE = ""
  # split name -> raw file name in manual_dir (subclasses with other layouts override
  # _find_splits).
  SPLIT_FILES: dict[str, str] = {}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=common_features(), homepage=self.HOMEPAGE,
                                          supervised_keys=None)

  def _find_splits(self, manual_dir: str) -> dict[str, str]:
    return {split: os.path.join(manual_dir, name) for split, name in self.SPLIT_FILES.items()
            if os.path.exists(os.path.join(manual_dir, name))}

  @abc.abstractmethod
  def _parse(self, source: str, split: str) -> Iterator[dict[str, Any]]:
    """Yields common-schema examples of one split."""

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    found = self._find_splits(manual_dir)
    if not found:
      raise DataFormatError(
          f"{self.name}: no raw files found in manual_dir={manual_dir}.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {split: self._generate_examples(source=src, split=split) for split, src in found.items()}

  def _generate_examples(self, source: str, split: str):
    for ex in self._parse(source, split):
      yield ex["id"], ex


class RjGsm8k(_ManualQABuilder):
  """GSM8K grade-school math (Cobbe et al., 2021)."""
  name = "rj_gsm8k"
  HOMEPAGE = "https://github.com/openai/grade-school-math"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put GSM8K's train.jsonl and/or test.jsonl (grade_school_math/data/ in the GitHub repo) "
      "in manual_dir. Each line: {\"question\": ..., \"answer\": \"... #### <number>\"}.")
  SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}

  def _parse(self, source, split):
    return parsers_math.parse_gsm8k(source, split)


class RjMath(_ManualQABuilder):
  """MATH competition problems (Hendrycks et al., 2021); answer = last \\boxed{} of the solution."""
  name = "rj_math"
  HOMEPAGE = "https://github.com/hendrycks/math"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Extract MATH.tar so that manual_dir contains MATH/{train,test}/<subject>/<n>.json "
      "(or {train,test}/<subject>/<n>.json). Each file: {\"problem\": ..., \"solution\": ...}.")

  def _find_splits(self, manual_dir):
    return {split: manual_dir for split in parsers_math.math_splits(manual_dir)}

  def _parse(self, source, split):
    return parsers_math.parse_math(source, split)


class RjHotpotqa(_ManualQABuilder):
  """HotPotQA multi-hop QA (Yang et al., 2018), distractor setting."""
  name = "rj_hotpotqa"
  HOMEPAGE = "https://hotpotqa.github.io"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put hotpot_train_v1.1.json and/or hotpot_dev_distractor_v1.json in manual_dir.")
  SPLIT_FILES = {"train": "hotpot_train_v1.1.json", "validation": "hotpot_dev_distractor_v1.json"}

  def _parse(self, source, split):
    return parsers_qa.parse_hotpotqa(source, split)


class RjMusique(_ManualQABuilder):
  """MuSiQue-Ans multi-hop QA (Trivedi et al., 2022)."""
  name = "rj_musique"
  HOMEPAGE = "https://github.com/StonyBrookNLP/musique"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put musique_ans_v1.0_train.jsonl and/or musique_ans_v1.0_dev.jsonl in manual_dir "
      "(the test file has no answers and is not read).")
  SPLIT_FILES = {"train": "musique_ans_v1.0_train.jsonl",
                 "validation": "musique_ans_v1.0_dev.jsonl"}

  def _parse(self, source, split):
    return parsers_qa.parse_musique(source, split)


class RjFinqa(_ManualQABuilder):
  """FinQA numerical reasoning over financial reports (Chen et al., 2021)."""
  name = "rj_finqa"
  HOMEPAGE = "https://github.com/czyssrs/FinQA"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put FinQA's dataset/train.json, dev.json and/or test.json in manual_dir.")
  SPLIT_FILES = {"train": "train.json", "validation": "dev.json", "test": "test.json"}

  def _parse(self, source, split):
    return parsers_qa.parse_finqa(source, split)


BUILDERS: dict[str, type[_ManualQABuilder]] = {
    "gsm8k": RjGsm8k, "math": RjMath, "hotpotqa": RjHotpotqa, "musique": RjMusique,
    "finqa": RjFinqa,
}
