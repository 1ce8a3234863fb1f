"""Running the sampler on a mesh: rows over the batch axes, kv heads over tensor.

`RolloutSharding(mesh)` is passed to `sampling.generate`. The host batch is placed
with the rows split over the rules' batch axes (a host-to-device transfer, which
happens anyway); inside the program the KV cache and the per-row decode state get
sharding constraints, so XLA keeps every row's cache on the devices that own the row
and each device's heads on its tensor shard. Params arrive already sharded (under
ROLLOUT_RULES: weights whole along the model dimension, so decode never all-gathers a
weight per token).

The object is frozen and hashable: it is a static argument of the jitted program.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from reasoning_jax.sharding.batch import axis_size
from reasoning_jax.sharding.rules import (ROLLOUT_RULES, ShardingRules, named_sharding,
                                          replicated)

# The logical axes of the cache's keys and values, `[L, B, K, S, H]`.
CACHE_AXES = ("layers", "batch", "kv_heads", "cache_seq", "head_dim")


@dataclasses.dataclass(frozen=True)
class RolloutSharding:
  """Where the sampler's batch and cache live.

  The sampler's arrays are told apart by rank, an invariant of its decode state: the
  only arrays with as many dimensions as `cache_axes` are the KV cache's keys and
  values; every other array is per-row `[B, ...]` (the cache's slot positions
  included) or a scalar.

  Attributes:
    mesh: a (data, fsdp, tensor) mesh (`reasoning_jax.sharding.make_mesh`).
    rules: the logical-axis table; ROLLOUT_RULES by default (batch over data x fsdp,
      heads, MLP and vocab over tensor, weights whole along the model dimension).
    cache_axes: the logical axes of the cache's keys and values.
  """
  mesh: Mesh
  rules: ShardingRules = ROLLOUT_RULES
  cache_axes: tuple[str, ...] = CACHE_AXES

  @property
  def data_size(self) -> int:
    """How many ways the batch axis is split (the batch bucket is a multiple of it)."""
    return axis_size(self.mesh, self.rules, "batch")

  def _rows(self, name: str, shape) -> NamedSharding:
    return named_sharding(name, shape, ("batch",) + (None,) * (len(shape) - 1),
                          self.mesh, self.rules)

  def put_batch(self, arrays):
    """Host arrays `[rows, ...]` placed with their rows over the batch axes."""
    return tuple(jax.device_put(a, self._rows("prompt batch", np.shape(a)))
                 for a in arrays)

  def put_process_rows(self, arrays, processes: int):
    """Each process's host rows `[rows, ...]` as one global array of `processes` times
    as many rows (process p's rows are global rows p*rows .. (p+1)*rows - 1)."""
    out = []
    for a in arrays:
      a = np.asarray(a)
      shape = (a.shape[0] * processes,) + a.shape[1:]
      out.append(jax.make_array_from_process_local_data(
          self._rows("prompt batch", shape), a, shape))
    return tuple(out)

  def constrain(self, tree, kind: str):
    """Sharding constraints on a KV cache (`kind` "cache": its scalar write index is
    left alone) or on any pytree of per-row arrays (`kind` "rows", e.g. the decode
    state with its cache: scalars replicated)."""
    if kind not in ("cache", "rows"):
      raise ValueError(f"constrain kind {kind!r}: use 'cache' or 'rows'")

    def leaf(x):
      if x.ndim == len(self.cache_axes):
        s = named_sharding("KV cache", x.shape, self.cache_axes, self.mesh, self.rules)
      elif x.ndim == 0:
        if kind == "cache":
          return x
        s = replicated(self.mesh)
      else:
        s = self._rows("decode state", x.shape)
      return jax.lax.with_sharding_constraint(x, s)

    return jax.tree.map(leaf, tree)
