"""The order of a run's examples: resumable streams of example indices, and a callback
that records which indices each process drew."""
from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import numpy as np

from reasoning_jax.data.pipeline import PipelineConfig, make_dataset

# Called with (step, phase, this process's example indices) for every batch drawn.
BatchCallback = Callable[[int, str, np.ndarray], None]


def index_stream(n: int, batch: int, seed: int):
  """A resumable grain iterator over batches of example indices."""
  ds = make_dataset([{"i": i} for i in range(n)],
                    PipelineConfig(batch_size=batch, seed=seed, num_threads=0),
                    shard_index=0, shard_count=1)
  return iter(ds)


def index_log(directory: str) -> BatchCallback:
  """A `BatchCallback` appending `{"step", "phase", "indices"}` lines to
  `directory/indices.p{process}.jsonl`: what each process consumed.

  The process index is read at the first write, not here: the callback is made before
  the trainer's multi-host start-up, which must come before any jax call.
  """
  def write(step: int, phase: str, idx: np.ndarray) -> None:
    path = os.path.join(directory, f"indices.p{jax.process_index()}.jsonl")
    with open(path, "a") as f:
      f.write(json.dumps({"step": step, "phase": phase, "indices": idx.tolist()}) + "\n")
  return write
