"""tfds builders (array_record, no TensorFlow) for GSM8K, MATH, HotPotQA, MuSiQue, FinQA.

    from reasoning_jax.data import tfds_builders
    tfds_builders.prepare("gsm8k", manual_dir="~/raw/gsm8k", data_dir="~/tfds")   # once
    train = tfds_builders.data_source("gsm8k", "train", data_dir="~/tfds")
    train[0] -> {"id": "gsm8k/train/0", "question": ..., "answer": "72", "rationale": ...,
                 "context": "", "answer_aliases": []}

`data_source` returns a random-access sequence of plain-`str` examples, ready for
`pipeline.make_dataset`. The prepared files are also readable with
`tfds.data_source("rj_gsm8k", split="train", data_dir=...)` once this package is imported
(which registers the builders), though that returns bytes, as tfds does.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from reasoning_jax.data.tfds_builders.builders import (BUILDERS, RjFinqa, RjGsm8k, RjHotpotqa,
                                                       RjMath, RjMusique, common_features)

__all__ = ["BUILDERS", "RjGsm8k", "RjMath", "RjHotpotqa", "RjMusique", "RjFinqa",
           "common_features", "prepare", "data_source", "TextSource"]


def _builder(dataset: str, data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  if dataset not in BUILDERS:
    raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(BUILDERS)}.")
  return BUILDERS[dataset](data_dir=os.fspath(os.path.expanduser(data_dir)),
                           file_format="array_record")


def prepare(dataset: str, manual_dir: str | os.PathLike,
            data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """Converts the raw files in `manual_dir` to array_record under `data_dir` (idempotent).

  Args:
    dataset: one of 'gsm8k', 'math', 'hotpotqa', 'musique', 'finqa'.
    manual_dir: folder holding the manually downloaded raw files (see each builder's
      MANUAL_DOWNLOAD_INSTRUCTIONS).
    data_dir: tfds data directory to write to.
  """
  builder = _builder(dataset, data_dir)
  manual_dir = os.fspath(os.path.expanduser(manual_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _to_text(value: Any) -> Any:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.dtype == object:
    return [_to_text(v) for v in value.tolist()]
  if isinstance(value, (list, tuple)):
    return [_to_text(v) for v in value]
  return value


class TextSource(Sequence):
  """A tfds data source whose examples come back with `str` fields and `list[str]` aliases."""

  def __init__(self, source: Sequence[dict[str, Any]]):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    return {k: _to_text(v) for k, v in self._source[index].items()}

  def __repr__(self) -> str:
    return f"TextSource({self._source!r})"


def data_source(dataset: str, split: str, data_dir: str | os.PathLike,
                manual_dir: str | os.PathLike | None = None) -> TextSource:
  """Random-access examples of a prepared split (prepares it first if `manual_dir` is given).

  Raises:
    ValueError: the dataset is not prepared and no manual_dir was given, or the split
      does not exist (the message lists the available ones).
  """
  builder = prepare(dataset, manual_dir, data_dir) if manual_dir is not None else _builder(
      dataset, data_dir)
  if not builder.is_prepared():
    raise ValueError(
        f"{builder.name} is not prepared in {data_dir}. Call "
        f"tfds_builders.prepare({dataset!r}, manual_dir=..., data_dir=...) first.")
  splits = sorted(builder.info.splits.keys())
  if split not in splits:
    raise ValueError(f"{builder.name} has no split {split!r}; available: {splits}.")
  return TextSource(builder.as_data_source(split=split))
