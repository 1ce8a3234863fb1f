"""grain input pipelines: per-host shard, shuffle, repeat, map, batch, resumable iterator.

A *source* is any random-access sequence of dict examples: a Python list, the result of
`load_jsonl`, or a `tfds.data_source` split (see `tfds_builders.data_source`). The pipeline
is built from grain's `MapDataset` so that every stage is index-based and deterministic:

    source ─► [shard_index::shard_count] ─► shuffle(seed) ─► repeat(num_epochs)
           ─► map(transform) ─► batch(batch_size, collate) ─► IterDataset

Sharding comes first so that each host shuffles only its own slice: the hosts' slices are
disjoint and together cover the epoch, and every host uses the same seed. The iterator
(`iter(dataset)`) is grain's `DatasetIterator`; its `get_state()` is a small JSON-able dict
and `set_state(state)` on a fresh iterator of the same pipeline resumes exactly at the next
batch (the state is a position, not a copy of buffered data, so prefetch threads do not
change it).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

Example = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """How a source becomes a stream of per-host batches.

  Attributes:
    batch_size: examples per batch *on this host* (the global batch is
      batch_size * shard_count).
    seed: shuffle seed, identical on every host; each epoch is reshuffled with a seed
      derived from it.
    shuffle: shuffle within each epoch (eval pipelines turn this off).
    num_epochs: passes over the data; None repeats forever (RL training usually does).
    drop_remainder: drop a final batch smaller than batch_size (only reachable with a
      finite num_epochs); keeps batch shapes static under jit.
    shard_drop_remainder: cut the source to a multiple of shard_count before sharding,
      so every host has the same number of examples and hosts step in lockstep. With
      False the first `len % shard_count` hosts get one more example.
    num_threads: grain read threads (0 reads on the calling thread).
    prefetch_buffer_size: elements read ahead by those threads.
  """
  batch_size: int
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None
  drop_remainder: bool = True
  shard_drop_remainder: bool = True
  num_threads: int = 2
  prefetch_buffer_size: int = 16


def collate(examples: Sequence[Example]) -> dict[str, Any]:
  """Batches dict examples key by key.

  Numeric scalars and arrays of one shape stack into a numpy array with a leading batch
  axis; everything else (strings, ragged lists) stays a Python list, because prompts and
  answers are tokenized later and ragged token lists cannot be stacked.
  """
  keys = list(examples[0])
  for i, ex in enumerate(examples):
    if list(ex) != keys:
      raise ValueError(
          f"Cannot batch examples with different fields: example 0 has {sorted(keys)}, "
          f"example {i} has {sorted(ex)}. Map every example to one schema first.")
  out: dict[str, Any] = {}
  for k in keys:
    values = [ex[k] for ex in examples]
    first = values[0]
    numeric = isinstance(first, (int, float, np.number, np.ndarray, np.bool_)) and not isinstance(
        first, (str, bytes))
    if numeric:
      shapes = {np.shape(v) for v in values}
      if len(shapes) == 1 and all(np.asarray(v).dtype.kind in "biuf" for v in values):
        out[k] = np.stack([np.asarray(v) for v in values])
        continue
    out[k] = values
  return out


def _validate_shard(shard_index: int, shard_count: int) -> None:
  if not isinstance(shard_count, int) or shard_count < 1:
    raise ValueError(f"shard_count must be a positive int, got {shard_count!r}.")
  if not isinstance(shard_index, int) or not 0 <= shard_index < shard_count:
    raise ValueError(
        f"shard_index must be in [0, {shard_count}), got {shard_index!r}. Pass "
        "jax.process_index() and jax.process_count() (the defaults).")


def make_dataset(
    source: Sequence[Example] | grain.MapDataset,
    cfg: PipelineConfig,
    *,
    shard_index: int | None = None,
    shard_count: int | None = None,
    transform: Callable[[Example], Example] | None = None,
    batch_fn: Callable[[Sequence[Example]], Any] | None = collate,
) -> grain.IterDataset:
  """Builds the per-host pipeline over `source`.

  Args:
    source: a random-access sequence of examples (list, jsonl rows, tfds data source),
      or a `grain.MapDataset` already built over one.
    cfg: the pipeline config.
    shard_index: this host's shard; defaults to `jax.process_index()`.
    shard_count: number of shards; defaults to `jax.process_count()`. Tests pass both
      to simulate several hosts in one process.
    transform: per-example function applied after shuffling (e.g. prompt formatting
      and tokenization); it runs in grain's read threads.
    batch_fn: turns a list of examples into a batch; `collate` by default, None for
      grain's default (stack every leaf).

  Returns:
    A `grain.IterDataset`; `iter()` it for a checkpointable iterator.
  """
  if cfg.batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}.")
  if cfg.num_epochs is not None and cfg.num_epochs < 1:
    raise ValueError(f"num_epochs must be >= 1 or None (forever), got {cfg.num_epochs}.")
  if shard_index is None or shard_count is None:
    import jax  # Lazily: only multi-host defaults need it; tests pass both explicitly.
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  _validate_shard(shard_index, shard_count)

  ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
  n = len(ds)
  if cfg.shard_drop_remainder:
    ds = ds[: n - n % shard_count]
  ds = ds[shard_index::shard_count]
  if len(ds) == 0:
    raise ValueError(
        f"Shard {shard_index}/{shard_count} of a source with {n} examples is empty; use "
        "fewer hosts or more data.")
  if cfg.drop_remainder and cfg.num_epochs is not None and (
      len(ds) * cfg.num_epochs < cfg.batch_size):
    raise ValueError(
        f"batch_size {cfg.batch_size} is larger than the {len(ds) * cfg.num_epochs} "
        f"examples this host sees in {cfg.num_epochs} epoch(s); every batch would be dropped.")
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds.repeat(cfg.num_epochs)
  if transform is not None:
    ds = ds.map(transform)
  ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder, batch_fn=batch_fn)
  read = grain.ReadOptions(num_threads=cfg.num_threads,
                           prefetch_buffer_size=cfg.prefetch_buffer_size)
  return ds.to_iter_dataset(read)


def state_to_bytes(state: dict[str, Any]) -> bytes:
  """Serializes an iterator state (for a checkpoint) as JSON bytes."""
  return json.dumps(state, sort_keys=True).encode("utf-8")


def state_from_bytes(data: bytes) -> dict[str, Any]:
  """Inverse of `state_to_bytes`."""
  return json.loads(data.decode("utf-8"))
