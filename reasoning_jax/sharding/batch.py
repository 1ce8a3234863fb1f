"""Batches on a mesh: rows over the rules' batch axes, in one or several processes.

With several jax processes, each process holds a contiguous block of a global batch's
rows (process p of P owns rows [p*n/P, (p+1)*n/P)): exactly the rows its devices hold
when the batch is split over the batch axes of a mesh whose devices run process by
process.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh

from reasoning_jax.sharding.rules import (TRAIN_RULES, ShardingRules, batch_sharding,
                                          replicated)


def _names(axes) -> tuple[str, ...]:
  return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def axis_size(mesh: Mesh, rules: ShardingRules, logical: str) -> int:
  """How many ways `rules` split the logical axis `logical` on `mesh`."""
  return math.prod(mesh.shape[n] for n in _names(rules.lookup(logical)))


def batch_shards(mesh: Mesh, rules: ShardingRules = TRAIN_RULES) -> int:
  """How many ways the rules split the batch axis on `mesh` (data x fsdp by default)."""
  return axis_size(mesh, rules, "batch")


def check_batch(rows: int, mesh: Mesh, rules: ShardingRules = TRAIN_RULES, *,
                micro_batches: int = 1, group: int = 1, name: str = "RL batch") -> None:
  """Raise a ValueError (naming the axis and sizes that work) unless every
  micro-batch of `rows` rows splits evenly over the batch axes and holds whole groups.

  `rows` is prompts_per_step x group_size (divided by minibatches): each micro-batch
  slice must be a multiple of the batch shards, or XLA would move rows between devices
  on every slice.
  """
  n = batch_shards(mesh, rules)
  axes = rules.lookup("batch")
  unit = n * micro_batches
  if rows % unit == 0 and (rows // micro_batches) % group == 0:
    return
  per_mb = "" if micro_batches == 1 else f" per micro-batch ({micro_batches} of them)"
  lo, hi = (rows // unit) * unit, -(-rows // unit) * unit
  fits = sorted({d for d in range(1, len(mesh.devices.flat) + 1)
                 if rows % (d * micro_batches) == 0})
  raise ValueError(
      f"{name} has {rows} rows{per_mb}, which the batch axis {axes} of size {n} does not "
      f"split evenly (with groups of {group}); use a row count (prompts_per_step x "
      f"group_size / minibatches) that is a multiple of {unit}, e.g. {lo or unit} or "
      f"{hi}, or a mesh whose batch axes have a total size in {fits}")


def batch_sharding_tree(batch, mesh: Mesh, rules: ShardingRules = TRAIN_RULES):
  """Shardings for a pytree of `[B, ...]` arrays: rows over the batch axes, scalars
  replicated."""
  def one(path, x):
    if x.ndim == 0:
      return replicated(mesh)
    return batch_sharding(mesh, rules, x.shape, name=jax.tree_util.keystr(path))
  return jax.tree_util.tree_map_with_path(one, batch)


def shard_batch(batch, mesh: Mesh, rules: ShardingRules = TRAIN_RULES):
  """A pytree of `[B, ...]` arrays placed with its rows over the batch axes.

  With several processes, host (numpy) leaves are this process's rows of the global
  batch and become global arrays of P times as many rows
  (`jax.make_array_from_process_local_data`); leaves that are already global jax
  arrays are resharded on device; scalars are the same on every process.
  """
  if jax.process_count() == 1:
    return jax.device_put(batch, batch_sharding_tree(batch, mesh, rules))
  n = jax.process_count()

  def one(path, x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x  # already global: resharded below
    x = np.asarray(x)
    if x.ndim == 0:
      return jax.make_array_from_process_local_data(replicated(mesh), x, ())
    shape = (x.shape[0] * n,) + x.shape[1:]
    sh = batch_sharding(mesh, rules, shape, name=jax.tree_util.keystr(path))
    return jax.make_array_from_process_local_data(sh, x, shape)

  batch = jax.tree_util.tree_map_with_path(one, batch)
  return jax.device_put(batch, batch_sharding_tree(batch, mesh, rules))


def local_rows(x: jax.Array, lo: int, hi: int) -> np.ndarray:
  """Rows [lo, hi) of a (possibly multi-process) array, from this process's shards.

  Raises a ValueError when this process's devices do not hold all of those rows.
  """
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)[lo:hi]
  out = np.zeros((hi - lo,) + x.shape[1:], x.dtype)
  have = np.zeros(out.shape, bool)
  for shard in x.addressable_shards:
    idx = shard.index
    rows = idx[0] if idx else slice(None)
    a, b, _ = rows.indices(x.shape[0])
    s, e = max(a, lo), min(b, hi)
    if s >= e:
      continue
    data = np.asarray(shard.data)[s - a:e - a]
    out[(slice(s - lo, e - lo),) + tuple(idx[1:])] = data
    have[(slice(s - lo, e - lo),) + tuple(idx[1:])] = True
  if not have.all():
    raise ValueError(f"this process's devices do not hold rows [{lo}, {hi}) of an array "
                     f"of shape {x.shape}; the mesh's batch axes must list the devices "
                     "process by process")
  return out
