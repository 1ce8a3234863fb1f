"""Running the sampler on a mesh: rows over the batch axes, kv heads over tensor.

`RolloutSharding(mesh)` is passed to `generate`. The host batch is placed with the rows
split over the rules' batch axes (a host-to-device transfer, which happens anyway);
inside the program the KV cache and the per-row decode state get sharding constraints,
so XLA keeps every row's cache on the devices that own the row and each device's heads
on its tensor shard. Params arrive already sharded (`rjm.shard_params`).

The object is frozen and hashable: it is a static argument of the jitted program.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh

from reasoning_jax import model as rjm
from reasoning_jax.sharding import ROLLOUT_RULES, ShardingRules, named_sharding, replicated

_CACHE_AXES = ("layers", "batch", "kv_heads", "cache_seq", "head_dim")


@dataclasses.dataclass(frozen=True)
class RolloutSharding:
  """Where the sampler's batch and cache live.

  Attributes:
    mesh: a (data, fsdp, tensor) mesh (`reasoning_jax.sharding.make_mesh`).
    rules: the logical-axis table; ROLLOUT_RULES by default (batch over data x fsdp,
      heads, MLP and vocab over tensor, weights whole along the model dimension).
  """
  mesh: Mesh
  rules: ShardingRules = ROLLOUT_RULES

  @property
  def data_size(self) -> int:
    """How many ways the batch axis is split (the batch bucket is a multiple of it)."""
    axes = self.rules.lookup("batch")
    names = () if axes is None else (axes,) if isinstance(axes, str) else axes
    return math.prod(self.mesh.shape[n] for n in names)

  def _rows(self, name: str, shape) -> jax.sharding.NamedSharding:
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
    """Sharding constraints on a KVCache ("cache") or on any pytree of per-row arrays
    ("rows"; a KVCache inside it is handled as a cache, scalars are replicated)."""
    def cache(c: rjm.KVCache) -> rjm.KVCache:
      kv = named_sharding("KV cache", c.k_LBKSH.shape, _CACHE_AXES, self.mesh, self.rules)
      pos = self._rows("cache positions", c.pos_BS.shape)
      return rjm.KVCache(k_LBKSH=jax.lax.with_sharding_constraint(c.k_LBKSH, kv),
                         v_LBKSH=jax.lax.with_sharding_constraint(c.v_LBKSH, kv),
                         pos_BS=jax.lax.with_sharding_constraint(c.pos_BS, pos),
                         index=c.index)

    def leaf(x):
      if isinstance(x, rjm.KVCache):
        return cache(x)
      s = replicated(self.mesh) if x.ndim == 0 else self._rows("decode state", x.shape)
      return jax.lax.with_sharding_constraint(x, s)

    if kind == "cache":
      return cache(tree)
    return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, rjm.KVCache))


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
